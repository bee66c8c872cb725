//! Envoy's ext_authz gRPC service: `Authorization/Check` requests in, each judged by the
//! [`Authorizer`] and answered with [`envoy::respond`]. Transport glue only.

use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, CheckResponse};

use super::{Authorizer, envoy};
use crate::webhook::server::CallerAuthenticated;

/// The `envoy.service.auth.v3.Authorization` implementation.
pub struct GrpcAuthorizer {
    authorizer: Arc<Authorizer>,
}

impl GrpcAuthorizer {
    pub fn new(authorizer: Arc<Authorizer>) -> Self {
        GrpcAuthorizer { authorizer }
    }
}

#[tonic::async_trait]
impl Authorization for GrpcAuthorizer {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let mut asked = envoy::read_check(request.get_ref());
        asked.gateway_verified = CallerAuthenticated::of_request(request.extensions());
        let answer = self.authorizer.judge(&asked, "grpc").await;
        Ok(tonic::Response::new(envoy::respond(&answer)))
    }
}
