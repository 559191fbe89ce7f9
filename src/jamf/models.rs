//! Wire models: the parts of Jamf's answers jamf-sync reads, as Jamf names them.
//!
//! Pro API field names follow Jamf's OpenAPI document (`ComputerInventoryV4`,
//! `ComputerGeneral`, ...); `tests/it/openapi.rs` checks them against it. Classic XML models
//! follow the Classic API's element names. A page is decoded into raw records first, so one
//! malformed record never fails its page.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// `GET …/computers-inventory` answer, records kept raw until decoded one by one.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryPage {
    pub total_count: i64,
    #[serde(default)]
    pub results: Vec<Box<RawValue>>,
    /// When the request for this page was sent (set by the client, not by Jamf).
    #[serde(skip)]
    pub requested_at: DateTime<Utc>,
}

/// The part of a computer record jamf-sync projects into columns.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputerRecord {
    pub id: String,
    pub udid: Option<String>,
    pub general: Option<ComputerGeneral>,
    pub hardware: Option<ComputerHardware>,
    pub operating_system: Option<ComputerOperatingSystem>,
    pub user_and_location: Option<ComputerUserAndLocation>,
    pub extension_attributes: Option<Vec<ExtensionAttribute>>,
    /// APPLICATIONS; `None` when the section was not asked for (Jamf sends `null`).
    pub applications: Option<Vec<ComputerApplication>>,
    /// GROUP_MEMBERSHIPS.
    pub group_memberships: Option<Vec<GroupMembership>>,
    /// CONFIGURATION_PROFILES.
    pub configuration_profiles: Option<Vec<ComputerConfigurationProfile>>,
    /// LOCAL_USER_ACCOUNTS.
    pub local_user_accounts: Option<Vec<ComputerLocalUserAccount>>,
    /// CERTIFICATES.
    pub certificates: Option<Vec<ComputerCertificate>>,
}

/// An installed configuration profile (`ComputerConfigurationProfile`).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputerConfigurationProfile {
    pub id: Option<String>,
    pub username: Option<String>,
    pub last_installed: Option<String>,
    pub removable: Option<bool>,
    pub display_name: Option<String>,
    pub profile_identifier: Option<String>,
    pub uuid: Option<String>,
}

/// A local account on the Mac (`ComputerLocalUserAccount`).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputerLocalUserAccount {
    pub uid: Option<String>,
    pub user_guid: Option<String>,
    pub username: Option<String>,
    pub full_name: Option<String>,
    pub admin: Option<bool>,
    pub home_directory: Option<String>,
    pub file_vault2_enabled: Option<bool>,
    pub user_account_type: Option<String>,
}

/// A certificate in the Mac's keychains (`ComputerCertificate`).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputerCertificate {
    pub common_name: Option<String>,
    pub identity: Option<bool>,
    pub expiration_date: Option<String>,
    pub username: Option<String>,
    pub lifecycle_status: Option<String>,
    pub certificate_status: Option<String>,
    pub subject_name: Option<String>,
    pub serial_number: Option<String>,
    pub sha1_fingerprint: Option<String>,
    pub issued_date: Option<String>,
}

/// One installed application (`ComputerApplication` in Jamf's schema).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputerApplication {
    pub name: Option<String>,
    pub path: Option<String>,
    pub version: Option<String>,
    pub bundle_id: Option<String>,
    pub mac_app_store: Option<bool>,
    pub size_megabytes: Option<i64>,
    pub update_available: Option<bool>,
}

/// One group the device is a member of (`GroupMembership`).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupMembership {
    pub group_id: Option<String>,
    pub group_name: Option<String>,
    pub smart_group: Option<bool>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputerGeneral {
    pub name: Option<String>,
    pub report_date: Option<String>,
    /// v4 name.
    pub last_contact: Option<String>,
    /// v1/v3 name.
    pub last_contact_time: Option<String>,
    pub remote_management: Option<RemoteManagement>,
    pub supervised: Option<bool>,
    pub asset_tag: Option<String>,
    pub platform: Option<String>,
    pub extension_attributes: Option<Vec<ExtensionAttribute>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteManagement {
    pub managed: Option<bool>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputerHardware {
    pub serial_number: Option<String>,
    pub model: Option<String>,
    pub model_identifier: Option<String>,
    pub extension_attributes: Option<Vec<ExtensionAttribute>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputerOperatingSystem {
    pub name: Option<String>,
    pub version: Option<String>,
    pub build: Option<String>,
    pub extension_attributes: Option<Vec<ExtensionAttribute>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputerUserAndLocation {
    pub username: Option<String>,
    pub realname: Option<String>,
    pub email: Option<String>,
    pub extension_attributes: Option<Vec<ExtensionAttribute>>,
}

/// `ComputerExtensionAttribute`.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionAttribute {
    pub definition_id: Option<String>,
    pub name: Option<String>,
    pub values: Option<Vec<String>>,
    pub data_type: Option<String>,
}

/// `OAuthTokenResponse`.
#[derive(Debug, Deserialize, Serialize)]
pub struct OAuthTokenResponse {
    pub access_token: String,
    pub expires_in: i64,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

/// `AuthTokenV1`.
#[derive(Debug, Deserialize, Serialize)]
pub struct AuthTokenV1 {
    pub token: String,
    pub expires: Option<String>,
}

/// `JamfProVersion`.
#[derive(Debug, Deserialize, Serialize)]
pub struct JamfProVersion {
    pub version: Option<String>,
}

/// The part of `<mobile_device>` projected into columns (quick-xml serde).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MobileDeviceXml {
    pub general: GeneralXml,
    pub location: LocationXml,
    pub extension_attributes: ExtensionAttributesXml,
    /// `None` when the record has no `<applications>` element.
    pub applications: Option<MobileApplicationsXml>,
    pub mobile_device_groups: Option<MobileDeviceGroupsXml>,
    pub configuration_profiles: Option<MobileProfilesXml>,
    pub certificates: Option<MobileCertificatesXml>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MobileProfilesXml {
    pub configuration_profile: Vec<MobileProfileXml>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MobileProfileXml {
    pub display_name: Option<String>,
    pub version: Option<String>,
    pub identifier: Option<String>,
    pub uuid: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MobileCertificatesXml {
    pub certificate: Vec<MobileCertificateXml>,
}

/// A certificate on a mobile device: its expiry as epoch milliseconds (authoritative, like
/// every Classic `_epoch`) and as `expires_utc`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MobileCertificateXml {
    pub common_name: Option<String>,
    pub identity: Option<String>,
    pub expires_epoch: Option<String>,
    pub expires_utc: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MobileApplicationsXml {
    pub application: Vec<MobileApplicationXml>,
}

/// One app on a mobile device: `application_version` is the build number,
/// `application_short_version` the version people know.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MobileApplicationXml {
    pub application_name: Option<String>,
    pub application_version: Option<String>,
    pub application_short_version: Option<String>,
    pub identifier: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MobileDeviceGroupsXml {
    pub mobile_device_group: Vec<MobileDeviceGroupXml>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MobileDeviceGroupXml {
    pub id: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct GeneralXml {
    pub id: Option<String>,
    pub display_name: Option<String>,
    pub device_name: Option<String>,
    pub name: Option<String>,
    pub udid: Option<String>,
    pub serial_number: Option<String>,
    pub model: Option<String>,
    pub os_type: Option<String>,
    pub os_version: Option<String>,
    pub managed: Option<String>,
    pub supervised: Option<String>,
    pub last_inventory_update_epoch: Option<String>,
    pub last_inventory_update_utc: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LocationXml {
    pub username: Option<String>,
    pub email_address: Option<String>,
    pub department: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ExtensionAttributesXml {
    pub extension_attribute: Vec<ExtensionAttributeXml>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ExtensionAttributeXml {
    pub id: Option<String>,
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub data_type: Option<String>,
    pub value: Option<String>,
}

/// `/api/v2/mobile-devices/detail` record (Jamf Pro API), for the `pro-api` source.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProMobileDevice {
    pub mobile_device_id: String,
    pub device_type: Option<String>,
    pub general: Option<ProGeneral>,
    pub hardware: Option<ProHardware>,
    pub user_and_location: Option<ProUserAndLocation>,
    pub extension_attributes: Option<Vec<ProExtensionAttribute>>,
    /// The APPLICATIONS, CERTIFICATES, PROFILES and GROUPS sections: `None` (JSON `null`)
    /// when not requested.
    pub applications: Option<Vec<ProMobileApplication>>,
    pub certificates: Option<Vec<ProMobileCertificate>>,
    pub profiles: Option<Vec<ProMobileProfile>>,
    pub groups: Option<Vec<ProMobileGroup>>,
}

/// `MobileDeviceApplicationInventoryDetail`: `shortVersion` is the version people know,
/// `version` the build.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProMobileApplication {
    pub identifier: Option<String>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub short_version: Option<String>,
}

/// `MobileDeviceCertificate`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProMobileCertificate {
    pub common_name: Option<String>,
    pub identity: Option<bool>,
    pub expiration_date: Option<String>,
}

/// `MobileDeviceProfile`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProMobileProfile {
    pub display_name: Option<String>,
    pub version: Option<String>,
    pub uuid: Option<String>,
    pub identifier: Option<String>,
    pub removable: Option<bool>,
    pub last_installed: Option<String>,
}

/// `MobileDeviceInventoryGroup`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProMobileGroup {
    pub group_id: Option<String>,
    pub group_name: Option<String>,
    pub smart: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProGeneral {
    pub udid: Option<String>,
    pub display_name: Option<String>,
    pub os_version: Option<String>,
    pub last_inventory_update_date: Option<String>,
    pub managed: Option<bool>,
    pub supervised: Option<bool>,
    pub extension_attributes: Option<Vec<ProExtensionAttribute>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProHardware {
    pub serial_number: Option<String>,
    pub model: Option<String>,
    pub extension_attributes: Option<Vec<ProExtensionAttribute>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProUserAndLocation {
    pub username: Option<String>,
    pub email_address: Option<String>,
    pub extension_attributes: Option<Vec<ProExtensionAttribute>>,
}

#[derive(Debug, Deserialize)]
pub struct ProExtensionAttribute {
    pub id: Option<String>,
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub data_type: Option<String>,
    pub value: Option<Vec<String>>,
}
