//! The specs the sync tests share: tenant `acme` (project 77) sending to a receiver with a service
//! account, and source `pg` pointing at a test PostgreSQL.

use ferry_core::spec::{SourceSpec, TenantSpec};

use crate::postgres::TestPostgres;

/// Tenant `acme`, project 77 (token `tok77`), service account `sa` / `pw`, sending to `base_url`.
pub fn receiver_tenant(base_url: &str) -> TenantSpec {
    toml::from_str(&format!(
        "id='acme'\nname='Acme'\nproject_id=77\nproject_token='tok77'\n[destination]\nbase_url='{base_url}'\n[auth.service_account]\nuser='sa'\nsecret='pw'\n"
    ))
    .expect("the test tenant spec parses")
}

/// Source `pg` of tenant `acme`: the test server's database and login, without TLS.
pub fn postgres_source(pg: &TestPostgres) -> SourceSpec {
    toml::from_str(&format!(
        "id='pg'\ntenant='acme'\n[kind.postgres]\nhost='{}'\nport={}\ndatabase='{}'\nuser='{}'\npassword='{}'\nssl_mode='disable'\n",
        pg.host, pg.port, pg.database, pg.user, pg.password
    ))
    .expect("the test source spec parses")
}
