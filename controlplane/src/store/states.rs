//! The states a sandbox or a worker can be in, as enums. The columns hold them as
//! TEXT: rows decode them through `TryFrom<String>` (`#[sqlx(try_from = "String")]`),
//! statements bind [`as_str`](SandboxState::as_str), and outside the store's SQL the
//! text is spelt only here. Code outside the store matches on the enums.

/// A state column held text that names no state (a row written by a newer version,
/// or by hand).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct UnknownState {
    kind: &'static str,
    value: String,
}

/// Declares a state enum with the text of each state: `as_str`, `Display`, and
/// `TryFrom<String>`/`FromStr` that refuse any other text.
macro_rules! states {
    (
        $(#[$meta:meta])*
        $name:ident ($kind:literal) {
            $($(#[$variant_meta:meta])* $variant:ident => $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// The text the column holds.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownState;

            fn from_str(text: &str) -> Result<Self, UnknownState> {
                match text {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(UnknownState {
                        kind: $kind,
                        value: text.to_owned(),
                    }),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownState;

            fn try_from(text: String) -> Result<Self, UnknownState> {
                text.parse()
            }
        }
    };
}

states! {
    /// Where a sandbox is in its life (`sandboxes.state`).
    SandboxState ("sandbox state") {
        /// Placed on a worker, which is creating it.
        Creating => "creating",
        Running => "running",
        /// Stopped on request: its filesystem and lease kept, no processes running.
        Stopped => "stopped",
        /// Claimed by one destroyer, which is calling its worker.
        Destroying => "destroying",
        Destroyed => "destroyed",
        /// Its creation failed, or no worker had room for it.
        Error => "error",
        /// Its worker stopped reporting it, stopped heartbeating, or was revoked.
        Lost => "lost",
    }
}

states! {
    /// Whether a worker's credentials are honoured (`workers.state`).
    WorkerState ("worker state") {
        Active => "active",
        /// Refused for good: its certificates and tokens no longer count.
        Revoked => "revoked",
    }
}

states! {
    /// What a worker said of itself in its last heartbeat (`workers.reported_state`).
    ReportedState ("reported worker state") {
        Ready => "ready",
        Draining => "draining",
        Drained => "drained",
    }
}

states! {
    /// A drain an operator asked of a worker (`workers.drain_state`).
    DrainState ("drain state") {
        /// No drain asked (the column's empty text).
        None => "",
        Draining => "draining",
        Drained => "drained",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_from_its_text() {
        for state in [
            SandboxState::Creating,
            SandboxState::Running,
            SandboxState::Destroying,
            SandboxState::Destroyed,
            SandboxState::Error,
            SandboxState::Lost,
        ] {
            assert_eq!(SandboxState::try_from(state.as_str().to_owned()), Ok(state));
        }
        for state in [WorkerState::Active, WorkerState::Revoked] {
            assert_eq!(state.as_str().parse(), Ok(state));
        }
        for state in [
            ReportedState::Ready,
            ReportedState::Draining,
            ReportedState::Drained,
        ] {
            assert_eq!(state.as_str().parse(), Ok(state));
        }
        for state in [DrainState::None, DrainState::Draining, DrainState::Drained] {
            assert_eq!(state.as_str().parse(), Ok(state));
        }
    }

    #[test]
    fn unknown_text_is_refused_with_what_it_was() {
        let err = "paused".parse::<SandboxState>().unwrap_err();
        assert_eq!(err.to_string(), r#"unknown sandbox state "paused""#);
        assert!("".parse::<WorkerState>().is_err());
    }
}
