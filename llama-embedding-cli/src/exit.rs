//! Exit codes (stable, for scripts): 0 done; 1 error (main); 2 bad usage; 3 finished but some
//! items failed; 4 stopped by the error strategy; 130 interrupted by a signal.

pub const EXIT_OK: u8 = 0;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_ITEMS_FAILED: u8 = 3;
pub const EXIT_STOPPED_BY_ERRORS: u8 = 4;
pub const EXIT_INTERRUPTED: u8 = 130;
