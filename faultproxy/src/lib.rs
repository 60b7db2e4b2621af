//! faultproxy (stub)
