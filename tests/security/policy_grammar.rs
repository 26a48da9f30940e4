//! Policy grammar and evaluation as AWS: any service's actions, known condition keys, variables, role sessions.
