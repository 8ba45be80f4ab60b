//! The Mixpanel client against the real bundled receiver over loopback HTTP: no mocks.

mod common;
mod events;
mod lookup;
mod profiles;
