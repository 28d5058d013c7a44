//! The admin server, on its own small runtime so it never adds latency to
//! traffic: `/ready`, `/stats/prometheus`, `/config_dump`, `/clusters`.
