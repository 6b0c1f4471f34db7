//! The storage contract suite against real SQLite files and a real PostgreSQL server.

mod postgres;
mod sqlite;
mod writer;
