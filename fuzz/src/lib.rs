//! Structure-aware fuzzing of every decoder in [`anytls::proto`], on the stable toolchain.
//!
//! Each [`Target`] pairs a generator that builds mostly-valid wire input with targeted
//! corruptions (lengths that lie, truncations, unknown command and type bytes, non-UTF-8
//! names, huge numbers, odd line endings) with a checker that runs the decoder and
//! asserts its contract, not just the absence of a panic:
//!
//! - the bytes consumed never exceed the input, and re-encoding a decoded value gives
//!   back exactly the bytes consumed (`decode(encode(x)) == x`);
//! - every strict prefix of a complete value answers "need more" (`None`/`Ok(None)`),
//!   "need more" is only answered while the longest possible value is not yet present
//!   (a decoder never makes its caller buffer without bound), and an error stays the
//!   same error whatever bytes follow it;
//! - each decoder agrees with a small model of its rule: last-value-wins settings, the
//!   UoT address types against the SOCKS ones, padding ranges and `c` marks, the records
//!   [`shape`](anytls::proto::padding::shape) builds;
//! - the memory a decoder allocates stays within a bound proportional to its input,
//!   measured by [`CountingAlloc`] when the binary installs it as its global allocator,
//!   and the padding records a scheme can ask for are bounded before they are built.
//!
//! A second input source mutates the files of a corpus (bit flips, interesting bytes,
//! truncation, duplication, splicing). A check is a pure function of its input (the
//! randomness it needs is seeded from the input's hash), so a saved input replays
//! exactly with [`check`].
//!
//! `tests/fuzz.rs` runs a bounded number of cases per target and replays the corpus in
//! `fuzz/corpus/`; `examples/fuzz.rs`, through `scripts/fuzz.sh`, runs for as long as
//! asked, saves failing inputs to `fuzz/crashes/` and grows the corpus.
//!
//! The crate, one file per concern:
//!
//! - `lib.rs`: [`Target`] and the entry points re-exported from the files below;
//! - `engine.rs`: the runner ([`run`], [`run_with`], [`check`], [`corpus_files`]): input
//!   choice, corpus replay, mutation and growth, the panic hook, crash files, hashing;
//! - `report.rs`: [`Report`], [`TargetReport`], [`Failure`] and how a report prints;
//! - `alloc.rs`: [`CountingAlloc`] and the helpers that measure a decoder call with it;
//! - `gen.rs`: generator helpers shared by several targets (interesting values, lengths
//!   that lie, domains, addresses, numbers as text);
//! - `checks.rs`: checker helpers shared by several targets (`ensure!`, prefixes,
//!   error variant names);
//! - `targets/`: one file per target with its generator, checker and model, the SOCKS
//!   address and [`shape`](anytls::proto::padding::shape) checks beside them;
//!   `targets/mod.rs` dispatches on [`Target`] and holds [`decode`].
//!
//! ```
//! use anytls_fuzz::{self as fuzz, Target};
//!
//! let report = fuzz::run(Target::Frame, 1, 500, None);
//! assert_eq!(report.cases(), 500);
//! assert!(report.failures.is_empty(), "{report}");
//! ```

mod alloc;
mod checks;
mod engine;
mod gen;
mod report;
mod targets;

use std::fmt;
use std::str::FromStr;

pub use alloc::CountingAlloc;
pub use engine::{check, corpus_files, run, run_with, Options};
pub use report::{hex, Failure, FailureKind, Report, TargetReport};
pub use targets::decode;

/// One decoder family of [`anytls::proto`], or all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// [`frame::decode`](anytls::proto::frame::decode) over a stream of frames, and the
    /// frame encoders.
    Frame,
    /// [`Address::decode`](anytls::proto::addr::Address::decode) (SOCKS form) and
    /// [`Address::parse`](anytls::proto::addr::Address::parse) (text).
    Address,
    /// [`Settings::decode`](anytls::proto::settings::Settings::decode).
    Settings,
    /// [`auth::decode_preamble`](anytls::proto::auth::decode_preamble) and
    /// [`Accounts::authenticate`](anytls::accounts::Accounts::authenticate).
    Auth,
    /// [`uot::Request::decode`](anytls::proto::uot::Request::decode).
    UotRequest,
    /// [`uot::decode_datagram`](anytls::proto::uot::decode_datagram); the input's first
    /// byte selects connect mode (bit 0).
    UotDatagram,
    /// [`PaddingScheme::parse`](anytls::proto::padding::PaddingScheme::parse), then its
    /// record sizes and [`padding::shape`](anytls::proto::padding::shape).
    Padding,
    /// A whole session: a client's frames after authentication, in reads of any
    /// size, through [`anytls::proto::session::ServerSession`].
    Session,
    /// The client and server session machines against each other on simulated
    /// time ([`anytls::proto::pair::Pair`]), driven by a script of steps.
    Pair,
    /// Every target above, in turn.
    All,
}

impl Target {
    /// Every single target, in the order `All` runs them.
    pub const EACH: [Target; 9] = [
        Target::Frame,
        Target::Address,
        Target::Settings,
        Target::Auth,
        Target::UotRequest,
        Target::UotDatagram,
        Target::Padding,
        Target::Session,
        Target::Pair,
    ];

    /// The name used on the command line and for the corpus folder.
    pub fn name(self) -> &'static str {
        match self {
            Target::Frame => "frame",
            Target::Address => "address",
            Target::Settings => "settings",
            Target::Auth => "auth",
            Target::UotRequest => "uot-request",
            Target::UotDatagram => "uot-datagram",
            Target::Padding => "padding",
            Target::Session => "session",
            Target::Pair => "pair",
            Target::All => "all",
        }
    }

    /// The single targets this one stands for.
    pub fn targets(self) -> Vec<Target> {
        match self {
            Target::All => Target::EACH.to_vec(),
            one => vec![one],
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Target, String> {
        Target::EACH
            .into_iter()
            .chain([Target::All])
            .find(|t| t.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Target::EACH.iter().map(|t| t.name()).collect();
                format!("unknown target {text:?}: one of {}, all", names.join(", "))
            })
    }
}
