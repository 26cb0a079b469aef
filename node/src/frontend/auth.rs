//! Authentication at connection startup, and the parameters reported to
//! clients.
//!
//! `trust` (only allowed while bound to loopback) or SCRAM-SHA-256 against
//! the superuser password. The salted password is computed once; an unknown
//! user is run through the same exchange with a random secret, so a wrong
//! password and a wrong user look the same to the client.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramAuth, SCRAM_ITERATIONS};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, ServerParameterProvider,
    StartupHandler,
};
use pgwire::api::{ClientInfo, ConnectionManager};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use rand::RngCore;

/// The superuser name.
pub const SUPERUSER: &str = "quiver";

/// The stored SCRAM secret of the superuser.
#[derive(Debug)]
pub struct ScramSecret {
    salt: Vec<u8>,
    salted: Vec<u8>,
    decoy_salt: Vec<u8>,
    decoy: Vec<u8>,
}

impl ScramSecret {
    pub fn new(password: &str) -> Self {
        let mut rng = rand::rng();
        let mut salt = vec![0u8; 16];
        rng.fill_bytes(&mut salt);
        let mut decoy_salt = vec![0u8; 16];
        rng.fill_bytes(&mut decoy_salt);
        let mut decoy_pw = [0u8; 32];
        rng.fill_bytes(&mut decoy_pw);
        let decoy_text: String = decoy_pw.iter().map(|b| format!("{b:02x}")).collect();
        ScramSecret {
            salted: gen_salted_password(password, &salt, SCRAM_ITERATIONS),
            salt,
            decoy: gen_salted_password(&decoy_text, &decoy_salt, SCRAM_ITERATIONS),
            decoy_salt,
        }
    }
}

#[derive(Debug)]
struct Source(Arc<ScramSecret>);

#[async_trait]
impl AuthSource for Source {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let s = &self.0;
        if login.user() == Some(SUPERUSER) {
            Ok(Password::new(Some(s.salt.clone()), s.salted.clone()))
        } else {
            Ok(Password::new(Some(s.decoy_salt.clone()), s.decoy.clone()))
        }
    }
}

/// Parameters sent to the client after authentication.
#[derive(Debug)]
pub struct Parameters;

impl ServerParameterProvider for Parameters {
    fn server_parameters<C>(&self, client: &C) -> Option<HashMap<String, String>>
    where
        C: ClientInfo,
    {
        let mut p = DefaultServerParameterProvider::default()
            .server_parameters(client)
            .unwrap_or_default();
        p.insert("server_version".into(), server_version());
        p.insert("TimeZone".into(), "UTC".into());
        p.insert("DateStyle".into(), "ISO, MDY".into());
        Some(p)
    }
}

/// What `server_version` reports: PostgreSQL-compatible first, then Quiver.
pub fn server_version() -> String {
    format!("15.0 (Quiver {})", env!("CARGO_PKG_VERSION"))
}

/// Trust: no password, only for loopback listeners.
pub struct Trust {
    manager: Arc<ConnectionManager>,
}

impl NoopStartupHandler for Trust {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.manager.clone())
    }
}

/// The startup handler of one connection.
pub enum Startup {
    Trust(Trust),
    Scram(SASLAuthStartupHandler<Parameters>),
}

impl Startup {
    pub fn new(secret: Option<&Arc<ScramSecret>>, manager: &Arc<ConnectionManager>) -> Self {
        match secret {
            None => Startup::Trust(Trust {
                manager: manager.clone(),
            }),
            Some(s) => {
                let mut scram = ScramAuth::new(Arc::new(Source(s.clone())));
                scram.set_iterations(SCRAM_ITERATIONS);
                Startup::Scram(
                    SASLAuthStartupHandler::new(Arc::new(Parameters))
                        .with_scram(scram)
                        .with_connection_manager(manager.clone()),
                )
            }
        }
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Trust(t) => t.on_startup(client, message).await,
            Startup::Scram(s) => s.on_startup(client, message).await,
        }
    }
}
