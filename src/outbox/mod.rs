//! Delivery: the workers that take jobs from the outbox and send acknowledgements and file issues.

mod retry;
mod worker;

pub use retry::RetryPolicy;
pub use worker::{Deliverer, DeliveryContext, GithubFiling, Pacer};
