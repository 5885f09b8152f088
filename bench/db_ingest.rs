//! Placeholder until the database ingest benchmark lands.
fn main() {}
