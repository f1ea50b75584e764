//! The roles kept in this process: one gateway on its own.

pub mod cache;
pub mod limit;
pub mod polls;
