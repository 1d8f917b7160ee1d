//! The client side of a session.
