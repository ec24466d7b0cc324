//! IO adapters: everything that talks to the outside world sits here behind small types, so the decision
//! core stays pure and tests can point these at real local servers: the Kubernetes API (leader lease,
//! fenced status writes, Secret key lookups, regional cluster clients), DNS, probes, S3 object stores, Vault and PostgreSQL.

pub mod archive;
pub mod dns;
pub mod geoip;
pub mod kube_status;
pub mod leader;
pub mod member;
pub mod member_tls;
pub mod objstore;
pub mod postgres;
pub mod probe;
pub mod redis;
pub mod regional;
pub mod secrets;
pub mod vault;
