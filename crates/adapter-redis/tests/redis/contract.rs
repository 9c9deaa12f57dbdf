//! The shared contract suite, on standalone Redis and on the Cluster.

mod standalone {
    spendgate_contract::budget_store_contract!(crate::support::standalone);
}

mod cluster {
    spendgate_contract::budget_store_contract!(crate::support::cluster);
}
