fn main() {
    // `sqlx::migrate!` embeds the migrations at compile time; a new or edited file must
    // rebuild the crate.
    println!("cargo:rerun-if-changed=migrations");
}
