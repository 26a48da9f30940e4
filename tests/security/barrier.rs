//! Record integrity: offline edits of the data directory are refused at load; destroyed material is gone.
