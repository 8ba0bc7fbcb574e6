//! Authentication: proving who sent a request, before anything in it is believed. Each sender
//! has its own proof: a Corelink bank its client certificate ([`tls`], or [`forwarded`] by a
//! trusted proxy) and a JWS over the request ([`jws`], with the keys of [`keys`]) that a nonce
//! cannot replay on this instance ([`replay`]); BNC an RSA signature ([`snap`]); Paysafe an
//! HMAC ([`hmac`]). [`key_decoding`] decodes keys one at a time, [`spki`] fingerprints them, so each accepted message can say
//! which key verified it. [`signing`] is the bank's side of the JWS, for the tools and tests.
//!
//! Nothing here knows HTTP answers or the routes: failures are typed, and the routes turn them
//! into the contract's codes.

pub mod forwarded;
pub mod hmac;
pub mod jws;
pub mod key_decoding;
pub mod keys;
pub mod replay;
pub mod signing;
pub mod snap;
pub mod spki;
pub mod tls;
