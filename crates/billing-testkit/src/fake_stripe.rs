//! A local server that speaks Stripe's API for the parts billing-stripe uses (built from
//! `../shared/fixtures/stripe/`), and delivers signed webhooks. Filled in by the Stripe work.
