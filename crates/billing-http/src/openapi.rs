//! The OpenAPI document, generated from the handlers and types (served at `/openapi.json`,
//! browsable at `/docs/`).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{gateway, platform, wallet};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key: `customer` (one account's wallet), `platform` (usage for any account) or `admin`",
                    ))
                    .build(),
            ),
        );
    }
}

/// The service's API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "billing",
        description = "Prepaid-credits billing: wallets, top-ups through payment gateways, usage debits. \
Every error is `{\"error\": {\"code\", \"message\"}}`. Amounts are JSON numbers written with their exact digits \
(strings are accepted too). Mutating calls accept an `Idempotency-Key` header (required for `POST /v1/usage`)."
    ),
    modifiers(&BearerAuth),
    paths(
        wallet::balance,
        wallet::top_up,
        wallet::top_up_status,
        wallet::transactions,
        wallet::transaction,
        wallet::topup_packs,
        wallet::topup_history,
        platform::usage,
        platform::create_account,
        platform::get_account,
        platform::create_key,
        platform::list_account_keys,
        platform::create_service_key,
        platform::list_keys,
        platform::revoke_key,
        platform::grant,
        platform::refund,
        platform::list_packs,
        platform::create_pack,
        platform::update_pack,
        platform::deactivate_pack,
        gateway::webhook,
        gateway::healthz,
    )
)]
pub struct ApiDoc;
