//! A local server that speaks MyFatoorah's REST API v2 for the parts billing-myfatoorah uses
//! (built from `../shared/fixtures/myfatoorah/`), and delivers signed webhooks. Filled in by
//! the MyFatoorah work.
