//! Guest test ROMs, built from source by build.rs and embedded.
