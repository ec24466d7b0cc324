//! IO adapters: everything that talks to the outside world sits here behind small types, so the decision
//! core stays pure and tests can point these at real local servers. Today: the Kubernetes API (leader
//! lease, fenced status writes, Secret key lookups).

pub mod dns;
pub mod kube_status;
pub mod leader;
pub mod probe;
pub mod secrets;
