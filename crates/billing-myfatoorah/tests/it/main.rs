//! Integration tests of the MyFatoorah adapter against the local fake server
//! (`billing_testkit::fake_myfatoorah`) over real HTTP, and against the webhook signature
//! vectors of `shared/fixtures/myfatoorah/`. No test reaches the internet.

mod checkout;
mod flow;
mod status;
mod support;
mod webhooks;
