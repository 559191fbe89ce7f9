//! Facts about Jamf Pro that configuration, client and engine all depend on (see
//! `../shared/jamf-api.md`). The simulator keeps its own copy on purpose: it is an independent
//! implementation that tests compare against.

/// Jamf's published guidance: never more than five concurrent connections to one server.
pub const JAMF_MAX_CONCURRENCY: u32 = 5;

/// Jamf silently clamps larger page sizes to this.
pub const JAMF_MAX_PAGE_SIZE: u32 = 2000;

/// Computer inventory sections the Jamf Pro API accepts (v4; v1 also has PLUGINS and FONTS).
pub const COMPUTER_SECTIONS: &[&str] = &[
    "GENERAL",
    "DISK_ENCRYPTION",
    "PURCHASING",
    "APPLICATIONS",
    "STORAGE",
    "USER_AND_LOCATION",
    "CONFIGURATION_PROFILES",
    "PRINTERS",
    "SERVICES",
    "HARDWARE",
    "LOCAL_USER_ACCOUNTS",
    "CERTIFICATES",
    "ATTACHMENTS",
    "PACKAGE_RECEIPTS",
    "SECURITY",
    "OPERATING_SYSTEM",
    "LICENSED_SOFTWARE",
    "IBEACONS",
    "SOFTWARE_UPDATES",
    "EXTENSION_ATTRIBUTES",
    "CONTENT_CACHING",
    "GROUP_MEMBERSHIPS",
];

/// Mobile device sections of `/api/v2/mobile-devices/detail` (the `pro-api` source).
pub const MOBILE_DEVICE_SECTIONS: &[&str] = &[
    "GENERAL",
    "HARDWARE",
    "USER_AND_LOCATION",
    "PURCHASING",
    "SECURITY",
    "APPLICATIONS",
    "EBOOKS",
    "NETWORK",
    "SERVICE_SUBSCRIPTIONS",
    "CERTIFICATES",
    "PROFILES",
    "USER_PROFILES",
    "PROVISIONING_PROFILES",
    "SHARED_USERS",
    "GROUPS",
    "EXTENSION_ATTRIBUTES",
];
