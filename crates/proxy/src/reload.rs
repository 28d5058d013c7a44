//! Config loading and live reload: load + validate + compile the config
//! directory; watch it (and SIGHUP); swap in valid changes, keep the last
//! good snapshot on invalid ones and report them.
