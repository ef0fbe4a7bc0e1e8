//! Prometheus remote write: the `/metrics` series pushed to a remote-write endpoint.
//! (Translating received OTLP metrics onto `/metrics` is a processor's job:
//! `swarmscope_processors::prometheus`.)

pub mod remote_write;
