//! The simulator's answers and the client's models, checked against Jamf's own OpenAPI document
//! (`../shared/jamf-openapi/jamf-pro-api-11.30.1.json`, or `$JAMF_OPENAPI_DIR`).
//!
//! Jamf's document is OpenAPI 3.0 and looser than real servers in one way (it rarely marks
//! fields nullable, though real answers carry `null` for unset values and unrequested sections)
//! and looser than we want in another (it allows any extra property). The check therefore:
//! allows `null` wherever the document does not say `nullable: false`, and forbids properties
//! the document does not list, so the simulator cannot invent fields. Formats (`date-time`,
//! `date`) and enums are validated.

use std::collections::BTreeSet;
use std::path::PathBuf;

use jamf_sync::jamf::models::{
    AuthTokenV1, ComputerApplication, ComputerCertificate, ComputerConfigurationProfile,
    ComputerGeneral, ComputerHardware, ComputerLocalUserAccount, ComputerOperatingSystem,
    ComputerRecord, ComputerUserAndLocation, ExtensionAttribute, GroupMembership, JamfProVersion,
    OAuthTokenResponse, ProMobileApplication, ProMobileCertificate, ProMobileGroup,
    ProMobileProfile, RemoteManagement,
};
use jamf_sync::simulator::SimConfig;
use serde_json::{json, Value};

use crate::support;

fn openapi() -> Value {
    let dir = std::env::var("JAMF_OPENAPI_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/jamf-openapi")
        });
    let path = dir.join("jamf-pro-api-11.30.1.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "Jamf's OpenAPI document is needed at {} (set JAMF_OPENAPI_DIR): {e}",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("valid JSON")
}

/// Rewrites an OpenAPI 3.0 schema into a strict JSON Schema (draft 4) as described above.
fn strict(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, val) in map {
                let val = match k.as_str() {
                    "properties" => match val {
                        Value::Object(props) => Value::Object(
                            props
                                .iter()
                                .map(|(p, s)| (p.clone(), nullable(s)))
                                .collect(),
                        ),
                        other => other.clone(),
                    },
                    "items" => nullable(val),
                    // Annotations only; `example` values would otherwise be read as keywords.
                    "example" | "description" | "readOnly" | "deprecated" | "default" => continue,
                    _ => strict(val),
                };
                out.insert(k.clone(), val);
            }
            if out.contains_key("properties") && !out.contains_key("additionalProperties") {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(strict).collect()),
        other => other.clone(),
    }
}

fn nullable(schema: &Value) -> Value {
    let s = strict(schema);
    if schema.get("nullable") == Some(&Value::Bool(false)) {
        return s;
    }
    json!({ "anyOf": [s, { "type": "null" }] })
}

/// Merges `allOf` object compositions into one object schema (so forbidding unknown
/// properties stays correct) and reads `oneOf` + discriminator as `anyOf`.
fn flatten(v: &Value, schemas: &serde_json::Map<String, Value>) -> Value {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(parts)) = map.get("allOf") {
                let mut props = serde_json::Map::new();
                let mut required: Vec<Value> = Vec::new();
                for part in parts {
                    let resolved = match part.get("$ref").and_then(Value::as_str) {
                        Some(r) => schemas
                            .get(r.trim_start_matches("#/components/schemas/"))
                            .cloned()
                            .unwrap_or(Value::Null),
                        None => part.clone(),
                    };
                    let resolved = flatten(&resolved, schemas);
                    if let Some(p) = resolved.get("properties").and_then(Value::as_object) {
                        props.extend(p.clone());
                    }
                    if let Some(r) = resolved.get("required").and_then(Value::as_array) {
                        required.extend(r.iter().cloned());
                    }
                }
                let mut out = json!({"type": "object", "properties": props});
                if !required.is_empty() {
                    out["required"] = Value::Array(required);
                }
                return out;
            }
            let mut out = serde_json::Map::new();
            for (k, val) in map {
                match k.as_str() {
                    "oneOf" => {
                        out.insert("anyOf".into(), flatten(val, schemas));
                    }
                    "discriminator" => {}
                    _ => {
                        out.insert(k.clone(), flatten(val, schemas));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| flatten(x, schemas)).collect()),
        other => other.clone(),
    }
}

struct Checker {
    components: Value,
}

impl Checker {
    fn new() -> Self {
        let doc = openapi();
        let schemas = doc["components"]["schemas"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let components = flatten(&doc["components"], &schemas);
        Self {
            components: strict(&components),
        }
    }

    fn errors(&self, schema: &str, instance: &Value) -> Vec<String> {
        let root = json!({
            "$ref": format!("#/components/schemas/{schema}"),
            "components": self.components,
        });
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .should_validate_formats(true)
            .build(&root)
            .expect("schema compiles");
        validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .take(10)
            .collect()
    }

    fn assert_valid(&self, schema: &str, instance: &Value, what: &str) {
        let errors = self.errors(schema, instance);
        assert!(
            errors.is_empty(),
            "{what} does not match {schema}: {errors:#?}"
        );
    }

    fn properties(&self, schema: &str) -> BTreeSet<String> {
        self.components["schemas"][schema]["properties"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }
}

async fn get(http: &reqwest::Client, url: String, token: &str) -> (u16, Value) {
    let r = http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON body"))
}

#[tokio::test]
async fn simulator_answers_match_jamfs_schema() {
    let checker = Checker::new();
    let sim = support::sim(SimConfig {
        computers: 30,
        mobile_devices: 25,
        ..SimConfig::default()
    })
    .await;
    let base = sim.url();
    jamf_sync::tls::install_crypto_provider();
    let http = reqwest::Client::new();

    let token: Value = http
        .post(format!("{base}/api/v1/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "jamf-sync-sim"),
            ("client_secret", "sim-secret"),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    checker.assert_valid("OAuthTokenResponse", &token, "oauth token");
    let bearer = token["access_token"].as_str().expect("token").to_string();

    let user: Value = http
        .post(format!("{base}/api/v1/auth/token"))
        .basic_auth("admin", Some("sim-password"))
        .send()
        .await
        .expect("user token")
        .json()
        .await
        .expect("json");
    checker.assert_valid("AuthTokenV1", &user, "user token");

    let (_, version) = get(&http, format!("{base}/api/v1/jamf-pro-version"), &bearer).await;
    checker.assert_valid("JamfProVersion", &version, "version");

    let v4_sections: Vec<&str> = jamf_sync::domain::facts::COMPUTER_SECTIONS.to_vec();
    let mut v1_sections = v4_sections.clone();
    v1_sections.extend(["PLUGINS", "FONTS"]);
    for (api, list_schema, detail_schema, sections) in [
        (
            "v4",
            "ComputerInventorySearchResultsV4",
            "ComputerInventoryV4",
            &v4_sections,
        ),
        (
            "v3",
            "ComputerInventorySearchResultsV3",
            "ComputerInventoryV3",
            &v4_sections,
        ),
        (
            "v1",
            "ComputerInventorySearchResults",
            "ComputerInventory",
            &v1_sections,
        ),
    ] {
        let q: String = sections.iter().map(|s| format!("section={s}&")).collect();
        let (status, page) = get(
            &http,
            format!("{base}/api/{api}/computers-inventory?{q}page-size=10&sort=id:asc"),
            &bearer,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(page["results"].as_array().map(Vec::len), Some(10));
        checker.assert_valid(
            list_schema,
            &page,
            &format!("{api} list page, all sections"),
        );

        // Default (GENERAL only): the other sections are null, as on real servers.
        let (_, page) = get(
            &http,
            format!("{base}/api/{api}/computers-inventory"),
            &bearer,
        )
        .await;
        assert!(page["results"][0]["hardware"].is_null());
        checker.assert_valid(list_schema, &page, &format!("{api} list page, GENERAL"));

        let (status, detail) = get(
            &http,
            format!("{base}/api/{api}/computers-inventory-detail/3"),
            &bearer,
        )
        .await;
        assert_eq!(status, 200);
        checker.assert_valid(detail_schema, &detail, &format!("{api} detail"));

        // Every simulated record is one our models decode.
        let rec: ComputerRecord = serde_json::from_value(detail).expect("model decodes");
        assert_eq!(rec.id, "3");
    }

    for (url, want) in [
        (
            format!("{base}/api/v4/computers-inventory-detail/99999"),
            404,
        ),
        (
            format!("{base}/api/v4/computers-inventory?section=NOPE"),
            400,
        ),
        (
            format!("{base}/api/v4/computers-inventory?sort=nope:asc"),
            400,
        ),
        (
            format!("{base}/api/v4/computers-inventory?filter=nope%3D%3D1"),
            400,
        ),
    ] {
        let (status, body) = get(&http, url.clone(), &bearer).await;
        assert_eq!(status, want, "{url}");
        checker.assert_valid("ApiError", &body, &url);
    }
    // Mobile devices through the Jamf Pro API, every section the simulator renders.
    let (status, page) = get(
        &http,
        format!("{base}/api/v2/mobile-devices/detail?section=GENERAL&section=HARDWARE&section=USER_AND_LOCATION&section=EXTENSION_ATTRIBUTES&section=APPLICATIONS&section=CERTIFICATES&section=PROFILES&section=GROUPS&page-size=25"),
        &bearer,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(page["results"].as_array().map(Vec::len), Some(25));
    let first = &page["results"][0];
    for section in ["applications", "certificates", "profiles", "groups"] {
        assert!(
            first[section].as_array().is_some_and(|a| !a.is_empty()),
            "{section} rendered"
        );
    }
    // What the client reads of the list sections is in Jamf's schema.
    for (model, value, schema) in [
        (
            "ProMobileApplication",
            serde_json::to_value(ProMobileApplication::default()),
            "MobileDeviceApplicationInventoryDetail",
        ),
        (
            "ProMobileCertificate",
            serde_json::to_value(ProMobileCertificate::default()),
            "MobileDeviceCertificate",
        ),
        (
            "ProMobileProfile",
            serde_json::to_value(ProMobileProfile::default()),
            "MobileDeviceProfile",
        ),
        (
            "ProMobileGroup",
            serde_json::to_value(ProMobileGroup::default()),
            "MobileDeviceInventoryGroup",
        ),
    ] {
        let fields = keys(&value.expect("serialize"));
        assert!(!fields.is_empty());
        assert_subset(model, &fields, &checker.properties(schema));
    }
    checker.assert_valid(
        "MobileDeviceInventorySearchResults",
        &page,
        "v2 mobile devices",
    );
    let (_, page) = get(
        &http,
        format!("{base}/api/v2/mobile-devices/detail"),
        &bearer,
    )
    .await;
    checker.assert_valid(
        "MobileDeviceInventorySearchResults",
        &page,
        "v2 mobile devices, GENERAL",
    );

    let (status, body) = get(&http, format!("{base}/api/v4/computers-inventory"), "bogus").await;
    assert_eq!(status, 401);
    checker.assert_valid("ApiError", &body, "401");
    sim.stop().await;
}

#[test]
fn the_check_has_teeth() {
    let checker = Checker::new();
    let good = json!({"totalCount": 1, "results": [{"id": "1", "udid": "x", "general": {"name": "a", "reportDate": "2025-02-15T13:46:35Z"}}]});
    assert!(checker
        .errors("ComputerInventorySearchResultsV4", &good)
        .is_empty());
    for bad in [
        json!({"totalCount": 1, "results": [{"id": "1", "inventedField": 1}]}),
        json!({"totalCount": 1, "results": [{"id": 1}]}),
        json!({"totalCount": 1, "results": [{"id": "1", "general": {"reportDate": "yesterday"}}]}),
        json!({"totalCount": 1, "results": [{"id": "1", "general": {"lastContactTime": "2025-02-15T13:46:35Z"}}]}),
        json!({"totalCount": 1, "results": [{"id": "1", "operatingSystem": {"fileVault2Status": "MAYBE"}}]}),
    ] {
        assert!(
            !checker
                .errors("ComputerInventorySearchResultsV4", &bad)
                .is_empty(),
            "should be rejected: {bad}"
        );
    }
}

#[test]
fn the_mobile_check_has_teeth() {
    let checker = Checker::new();
    let schema = "MobileDeviceInventorySearchResults";
    let good = json!({"totalCount": 1, "results": [{"mobileDeviceId": "1", "deviceType": "iOS",
        "general": {"displayName": "a", "lastInventoryUpdateDate": "2025-02-15T13:46:35Z"}}]});
    assert!(
        checker.errors(schema, &good).is_empty(),
        "{:?}",
        checker.errors(schema, &good)
    );
    for bad in [
        json!({"totalCount": 1, "results": [{"mobileDeviceId": "1", "deviceType": "iOS", "inventedField": 1}]}),
        json!({"totalCount": 1, "results": [{"mobileDeviceId": "1", "deviceType": "iOS", "general": {"displayName": 5}}]}),
        json!({"totalCount": 1, "results": [{"mobileDeviceId": "1", "deviceType": "iOS", "general": {"lastInventoryUpdateDate": "today"}}]}),
    ] {
        assert!(
            !checker.errors(schema, &bad).is_empty(),
            "should be rejected: {bad}"
        );
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn assert_subset(model: &str, fields: &BTreeSet<String>, allowed: &BTreeSet<String>) {
    let extra: Vec<_> = fields.difference(allowed).collect();
    assert!(
        extra.is_empty(),
        "{model} has fields Jamf's schema lacks: {extra:?}"
    );
}

#[test]
fn client_models_match_jamfs_schema() {
    let checker = Checker::new();
    let union = |a: &str, b: &str| -> BTreeSet<String> {
        checker
            .properties(a)
            .union(&checker.properties(b))
            .cloned()
            .collect()
    };
    let ea = ExtensionAttribute {
        definition_id: Some("1".into()),
        name: Some("n".into()),
        values: Some(vec!["v".into()]),
        data_type: Some("STRING".into()),
    };
    // Struct literals without `..Default::default()`: adding a field to a model breaks this
    // test until the field is listed here, and so checked against the schema.
    let rec = ComputerRecord {
        id: "1".into(),
        udid: Some("u".into()),
        general: Some(ComputerGeneral {
            name: Some("n".into()),
            report_date: Some("2025-02-15T13:46:35Z".into()),
            last_contact: Some("2025-02-15T13:46:35Z".into()),
            last_contact_time: Some("2025-02-15T13:46:35Z".into()),
            remote_management: Some(RemoteManagement {
                managed: Some(true),
            }),
            supervised: Some(true),
            asset_tag: Some("a".into()),
            platform: Some("Mac".into()),
            extension_attributes: Some(vec![ea.clone()]),
        }),
        hardware: Some(ComputerHardware {
            serial_number: Some("s".into()),
            model: Some("m".into()),
            model_identifier: Some("mi".into()),
            extension_attributes: Some(vec![ea.clone()]),
        }),
        operating_system: Some(ComputerOperatingSystem {
            name: Some("macOS".into()),
            version: Some("15".into()),
            build: Some("b".into()),
            extension_attributes: Some(vec![ea.clone()]),
        }),
        user_and_location: Some(ComputerUserAndLocation {
            username: Some("u".into()),
            realname: Some("r".into()),
            email: Some("e".into()),
            extension_attributes: Some(vec![ea.clone()]),
        }),
        extension_attributes: Some(vec![ea.clone()]),
        applications: Some(vec![ComputerApplication {
            name: Some("A.app".into()),
            path: Some("/Applications/A.app".into()),
            version: Some("1.0".into()),
            bundle_id: Some("com.a".into()),
            mac_app_store: Some(false),
            size_megabytes: Some(12),
            update_available: Some(false),
        }]),
        group_memberships: Some(vec![GroupMembership {
            group_id: Some("1".into()),
            group_name: Some("All".into()),
            smart_group: Some(true),
        }]),
        configuration_profiles: Some(vec![ComputerConfigurationProfile {
            id: Some("1".into()),
            username: Some("u".into()),
            last_installed: Some("2025-02-15T13:46:35Z".into()),
            removable: Some(true),
            display_name: Some("Wi-Fi".into()),
            profile_identifier: Some("com.example.wifi".into()),
            uuid: Some("U".into()),
        }]),
        local_user_accounts: Some(vec![ComputerLocalUserAccount {
            uid: Some("501".into()),
            user_guid: Some("G".into()),
            username: Some("u".into()),
            full_name: Some("U".into()),
            admin: Some(true),
            home_directory: Some("/Users/u".into()),
            file_vault2_enabled: Some(true),
            user_account_type: Some("LOCAL".into()),
        }]),
        certificates: Some(vec![ComputerCertificate {
            common_name: Some("c".into()),
            identity: Some(true),
            expiration_date: Some("2030-10-31T18:04:13Z".into()),
            username: Some("u".into()),
            lifecycle_status: Some("ACTIVE".into()),
            certificate_status: Some("ISSUED".into()),
            subject_name: Some("CN=c".into()),
            serial_number: Some("1".into()),
            sha1_fingerprint: Some("f".into()),
            issued_date: Some("2025-02-15T13:46:35Z".into()),
        }]),
    };
    let v = serde_json::to_value(&rec).expect("serialize");
    assert_subset(
        "ComputerApplication",
        &keys(&v["applications"][0]),
        &union("ComputerApplicationV3", "ComputerApplication"),
    );
    for (model, key, schema) in [
        (
            "ComputerConfigurationProfile",
            "configurationProfiles",
            "ComputerConfigurationProfile",
        ),
        (
            "ComputerLocalUserAccount",
            "localUserAccounts",
            "ComputerLocalUserAccount",
        ),
        ("ComputerCertificate", "certificates", "ComputerCertificate"),
    ] {
        assert_subset(model, &keys(&v[key][0]), &checker.properties(schema));
    }
    assert_subset(
        "GroupMembership",
        &keys(&v["groupMemberships"][0]),
        &checker.properties("GroupMembership"),
    );
    assert_subset(
        "ComputerRecord",
        &keys(&v),
        &union("ComputerInventoryV4", "ComputerInventory"),
    );
    // v4 renamed lastContactTime to lastContact: each name must exist in one version.
    let general = keys(&v["general"]);
    assert!(checker
        .properties("ComputerGeneralV4")
        .contains("lastContact"));
    assert!(checker
        .properties("ComputerGeneral")
        .contains("lastContactTime"));
    assert_subset(
        "ComputerGeneral",
        &general,
        &union("ComputerGeneralV4", "ComputerGeneral"),
    );
    assert_subset(
        "ComputerHardware",
        &keys(&v["hardware"]),
        &checker.properties("ComputerHardware"),
    );
    assert_subset(
        "ComputerOperatingSystem",
        &keys(&v["operatingSystem"]),
        &checker.properties("ComputerOperatingSystem"),
    );
    assert_subset(
        "ComputerUserAndLocation",
        &keys(&v["userAndLocation"]),
        &checker.properties("ComputerUserAndLocation"),
    );
    assert_subset(
        "RemoteManagement",
        &keys(&v["general"]["remoteManagement"]),
        &checker.properties("ComputerRemoteManagement"),
    );
    assert_subset(
        "ExtensionAttribute",
        &keys(&v["extensionAttributes"][0]),
        &checker.properties("ComputerExtensionAttribute"),
    );
    let token = serde_json::to_value(OAuthTokenResponse {
        access_token: "t".into(),
        expires_in: 60,
        token_type: Some("Bearer".into()),
        scope: Some("api-role:1".into()),
    })
    .expect("serialize");
    checker.assert_valid("OAuthTokenResponse", &token, "OAuthTokenResponse model");
    let user = serde_json::to_value(AuthTokenV1 {
        token: "t".into(),
        expires: Some("2026-01-24T21:35:20.373Z".into()),
    })
    .expect("serialize");
    checker.assert_valid("AuthTokenV1", &user, "AuthTokenV1 model");
    let version = serde_json::to_value(JamfProVersion {
        version: Some("11.30.1".into()),
    })
    .expect("serialize");
    checker.assert_valid("JamfProVersion", &version, "JamfProVersion model");

    // The sections we accept in config are exactly Jamf's v4 enum.
    let doc = openapi();
    let enum_values: BTreeSet<String> = doc["components"]["schemas"]["ComputerSectionV4"]["enum"]
        .as_array()
        .expect("enum")
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let ours: BTreeSet<String> = jamf_sync::domain::facts::COMPUTER_SECTIONS
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(ours, enum_values);
}

#[tokio::test]
async fn simulator_pages_filters_and_sorts_like_jamf() {
    jamf_sync::tls::install_crypto_provider();
    let sim = support::sim(SimConfig {
        computers: 2500,
        ..SimConfig::default()
    })
    .await;
    let base = sim.url();
    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!("{base}/api/v1/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "jamf-sync-sim"),
            ("client_secret", "sim-secret"),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let bearer = token["access_token"].as_str().expect("token").to_string();
    let list = |q: &str| format!("{base}/api/v4/computers-inventory?{q}");

    // page-size above 2000 is clamped silently; totalCount counts every match.
    let (status, page) = get(&http, list("page-size=5000&sort=id:asc"), &bearer).await;
    assert_eq!(status, 200);
    assert_eq!(page["totalCount"], 2500);
    assert_eq!(page["results"].as_array().map(Vec::len), Some(2000));
    // 0-based pages; past the end is an empty list, not an error.
    let (_, page) = get(&http, list("page=1&page-size=2000&sort=id:asc"), &bearer).await;
    assert_eq!(page["results"].as_array().map(Vec::len), Some(500));
    assert_eq!(page["results"][0]["id"], "2001");
    let (_, page) = get(&http, list("page=9&page-size=2000"), &bearer).await;
    assert_eq!(page["results"].as_array().map(Vec::len), Some(0));
    // Keyset filter, descending sort, comma-joined sections.
    let (_, page) = get(
        &http,
        list("filter=id%3E%222490%22&sort=id:desc&section=GENERAL,HARDWARE"),
        &bearer,
    )
    .await;
    assert_eq!(page["totalCount"], 10);
    assert_eq!(page["results"][0]["id"], "2500");
    assert!(page["results"][0]["hardware"]["serialNumber"].is_string());
    // The default sort is general.name:asc.
    let (_, page) = get(&http, list("page-size=3"), &bearer).await;
    let names: Vec<&str> = page["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["general"]["name"].as_str())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    // RSQL on report dates, with `and` and `=in=`.
    sim.touch_ids(&[5, 6, 7]);
    let since = (chrono::Utc::now() - chrono::Duration::minutes(1))
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let filter = format!("general.reportDate>=\"{since}\" and id=in=(5,7,9)");
    let url =
        reqwest::Url::parse_with_params(&list(""), &[("filter", filter.as_str())]).expect("url");
    let (_, page) = get(&http, url.to_string(), &bearer).await;
    assert_eq!(page["totalCount"], 2, "{page}");
    // v4 has no PLUGINS section; v1 does.
    let (status, _) = get(&http, list("section=PLUGINS"), &bearer).await;
    assert_eq!(status, 400);
    let (status, _) = get(
        &http,
        format!("{base}/api/v1/computers-inventory?section=PLUGINS"),
        &bearer,
    )
    .await;
    assert_eq!(status, 200);
    sim.stop().await;
}
