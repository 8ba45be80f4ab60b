//! Ferry's gRPC protocols. `admin::v1` is the admin API (tenants, tokens, sources, syncs, runs,
//! and the cluster's nodes in `ferry/admin/v1/cluster.proto`)
//! that `ferry node --listen` serves and the `ferry` CLI speaks; see `ferry/admin/v1/admin.proto`
//! for the contract (auth, write-only credentials, versions). `cluster::v1` carries the links
//! between a cluster's nodes (`ferry/cluster/v1/link.proto`).

pub mod admin {
    pub mod v1 {
        tonic::include_proto!("ferry.admin.v1");
    }
}

pub mod cluster {
    pub mod v1 {
        tonic::include_proto!("ferry.cluster.v1");
    }
}

/// The encoded `FileDescriptorSet` of every proto here, for the gRPC reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ferry_descriptor");

#[cfg(test)]
mod tests {
    use super::admin::v1;
    use prost::Message;

    #[test]
    fn messages_round_trip_and_the_descriptor_names_every_service() {
        let sync = v1::Sync {
            tenant: "acme".into(),
            id: "orders".into(),
            target: Some(v1::ReadTarget {
                target: Some(v1::read_target::Target::Table("public.orders".into())),
            }),
            strict: Some(false),
            ..Default::default()
        };
        let bytes = sync.encode_to_vec();
        assert_eq!(v1::Sync::decode(bytes.as_slice()).unwrap(), sync);

        let text = String::from_utf8_lossy(super::FILE_DESCRIPTOR_SET);
        for service in ["Tenants", "Sources", "Syncs", "Runs", "Cluster"] {
            assert!(text.contains(service), "{service} missing from the descriptor set");
        }
    }
}
