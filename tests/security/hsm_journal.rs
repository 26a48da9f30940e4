//! HSM objects are never destroyed on a guess: pending generations are journalled; orphans are reported.
