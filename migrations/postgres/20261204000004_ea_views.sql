-- The typed extension attribute views made so far (store::views): recreated when the
-- attributes or their types change.
CREATE TABLE ea_views (
    instance    TEXT NOT NULL,
    device_type TEXT NOT NULL,
    view_name   TEXT NOT NULL,
    signature   TEXT NOT NULL,
    PRIMARY KEY (instance, device_type)
);
