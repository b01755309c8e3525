//! Where the function runs and where it listens.

use super::{ConfigError, Vars, setting};

/// Where the function runs, decided once at start from the variables each
/// platform sets in its instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Platform {
    /// AWS Lambda: `AWS_LAMBDA_RUNTIME_API` is set (by Lambda, or by
    /// `cargo lambda watch`); `function` is `AWS_LAMBDA_FUNCTION_NAME`.
    Lambda { function: String },
    /// Alibaba Function Compute: FC sets `FC_FUNCTION_NAME` and `FC_REGION`
    /// in every instance (2.0 and 3.0, every runtime) and refuses `FC_*`
    /// names in a function's own environment, so a deploy cannot fake them.
    Fc { function: String },
    /// Anywhere else: local runs, tests.
    Local,
}

impl Platform {
    /// The platform these variables say the process runs on (the variables
    /// each platform sets; an empty value counts as unset).
    pub fn from_vars(vars: &Vars) -> Self {
        let get = |name: &str| setting(vars, name);
        if get("AWS_LAMBDA_RUNTIME_API").is_some() {
            Self::Lambda {
                function: get("AWS_LAMBDA_FUNCTION_NAME")
                    .unwrap_or("unknown")
                    .to_owned(),
            }
        } else if let (Some(function), Some(_)) = (get("FC_FUNCTION_NAME"), get("FC_REGION")) {
            Self::Fc {
                function: function.to_owned(),
            }
        } else {
            Self::Local
        }
    }

    /// The platform's name of this function, if it has one.
    pub fn function(&self) -> Option<&str> {
        match self {
            Self::Lambda { function } | Self::Fc { function } => Some(function),
            Self::Local => None,
        }
    }
}

/// FC passes the port a custom runtime must listen on in this variable.
pub const FC_PORT_VAR: &str = "FC_CUSTOM_LISTEN_PORT";

/// The address to serve plain HTTP on, as far as the settings give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListenAddr {
    pub host: Option<std::net::IpAddr>,
    pub port: Option<u16>,
}

impl ListenAddr {
    /// This address, with `default`'s host or port where the settings give none.
    pub fn or(self, default: std::net::SocketAddr) -> std::net::SocketAddr {
        std::net::SocketAddr::new(
            self.host.unwrap_or(default.ip()),
            self.port.unwrap_or(default.port()),
        )
    }
}

/// `LISTEN_HOST`, and `PORT` or else FC's port variable.
pub(super) fn listen_from_vars(vars: &Vars) -> Result<ListenAddr, ConfigError> {
    Ok(ListenAddr {
        host: setting(vars, "LISTEN_HOST")
            .map(|v| {
                v.parse().map_err(|_| {
                    ConfigError::new("LISTEN_HOST", format!("expected an IP address, got `{v}`"))
                })
            })
            .transpose()?,
        port: ["PORT", FC_PORT_VAR]
            .into_iter()
            .find_map(|var| Some((var, setting(vars, var)?)))
            .map(|(var, v)| {
                v.parse().map_err(|_| {
                    ConfigError::new(var, format!("expected a port number, got `{v}`"))
                })
            })
            .transpose()?,
    })
}
