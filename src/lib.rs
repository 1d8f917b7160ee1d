//! anytls-rs: a thread-per-core AnyTLS server on glommio and rustls.
pub mod mux;
pub mod proto;
