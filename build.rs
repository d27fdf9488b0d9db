//! Rebuilds the crate when a migration is added or changed: `embed_migrations!` reads the
//! `migrations/` folders at compile time, and a proc macro cannot ask cargo to watch them
//! (diesel_migrations' "Automatic rebuilds"). Without this, a new migration folder was left
//! out of the binary until some Rust file changed.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    // Naming a path turns off cargo's default of rerunning on any change in the package.
    println!("cargo:rerun-if-changed=Cargo.toml");
}
