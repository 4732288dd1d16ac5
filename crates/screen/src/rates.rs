//! Connections, messages and recipients per minute per client (an IPv4
//! address or an IPv6 /64), in a bounded in-memory table: when full, the
//! entry seen longest ago is evicted, so memory does not grow with the
//! number of clients.
