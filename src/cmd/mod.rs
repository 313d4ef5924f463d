//! One module per subcommand: its arguments (clap), the library calls, what it prints.

pub mod bound;
pub mod compare;
pub mod gate;
pub mod merge;
pub mod node;
pub mod report;
pub mod run;
pub mod sweep;
