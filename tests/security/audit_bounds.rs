//! Unauthenticated traffic has a bounded cost: metrics labels, audit records, disk.
