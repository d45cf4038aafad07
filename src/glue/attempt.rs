//! HTTP context of the provider-attempt role (an upstream filter on fallback
//! routes' aggregate clusters): forwards callbacks to [`ProviderAttemptStream`].

use proxy_wasm::traits::{Context, HttpContext};

use super::envoy_host::EnvoyHost;
use super::stream::action;
use crate::provider_attempt::ProviderAttemptStream;

#[derive(Default)]
pub struct AttemptHttp {
    attempt: ProviderAttemptStream,
    host: EnvoyHost,
}

impl Context for AttemptHttp {}

impl HttpContext for AttemptHttp {
    fn on_http_request_headers(
        &mut self,
        _n: usize,
        end_of_stream: bool,
    ) -> proxy_wasm::types::Action {
        action(
            self.attempt
                .on_request_headers(&mut self.host, end_of_stream),
        )
    }

    fn on_http_request_body(
        &mut self,
        body_size: usize,
        end_of_stream: bool,
    ) -> proxy_wasm::types::Action {
        action(
            self.attempt
                .on_request_body(&mut self.host, body_size, end_of_stream),
        )
    }

    fn on_http_response_headers(
        &mut self,
        _n: usize,
        _end_of_stream: bool,
    ) -> proxy_wasm::types::Action {
        action(self.attempt.on_response_headers(&mut self.host))
    }
}
