//! Node mode: serving the users and settings a panel gives.

pub mod host;
pub mod routes;
