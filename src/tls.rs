//! The process-wide TLS crypto provider (ring), shared by reqwest and sqlx. One provider for
//! both keeps a single crypto library in the build; installing it is idempotent.

/// Installs the provider once; later calls are no-ops. Certificate verification stays on.
pub fn install_crypto_provider() {
    // Fails only when a provider is already installed, which is what we want anyway.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
