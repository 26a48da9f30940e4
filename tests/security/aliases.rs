//! Alias names are authorised, and names the caller may not see answer alike; quotas on what callers can grow.
