//! Locally generated responses, with Envoy's status codes, bodies and
//! response flags, in one place.
