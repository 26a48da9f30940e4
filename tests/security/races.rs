//! Races between IAM changes and the credentials they govern.
