//! The Quiver Kubernetes operator as a library, so that tests (and the
//! binary in `main.rs`) reach every step of the reconcile pipeline.
//!
//! [`run`] wires the `Controller` (leader election in [`leader`]);
//! [`controller`] runs, per object: read -> [`validate`] -> [`build`]
//! (pure) -> [`apply`] (server-side apply) -> drive the cluster through
//! [`meta_client`] (register workers, [`rebalance`] onto new ones) ->
//! [`status`]; before the build, [`retire`] drains the workers a scale-in
//! removes and removes them from the metadata, and [`scale_in`] holds the
//! scale-in (or keeps a removed worker group) until they are gone, or while
//! the cluster state cannot be read (fail closed). [`crd`] defines the
//! resource itself.

pub mod apply;
pub mod build;
pub mod controller;
pub mod crd;
pub mod leader;
pub mod meta_client;
pub mod rebalance;
pub mod render;
pub mod retire;
pub mod run;
pub mod scale_in;
pub mod status;
pub mod validate;
