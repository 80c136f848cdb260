//! Loopback fakes of the cloud APIs Tandemn's providers call, for tests that must
//! not touch the internet. Each fake speaks its real API's routes and shapes and is
//! driven by control routes of its own; none holds real credentials.

pub mod skypilot;
