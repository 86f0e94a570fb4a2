//! A man in the middle for the Data and Auth services: a real gRPC server that forwards
//! every call to an upstream chainlogd and can rewrite the answers of the verified calls
//! (and of Get and CurrentState) before the client sees them, as a compromised server or
//! anything on the path could.
#![allow(dead_code, clippy::unwrap_used)]

use chainlog::wire::{self, auth_client, auth_server, data_client, data_server};
use std::sync::{Arc, Mutex};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// A rewrite of one kind of answer, set and cleared by the test as it goes.
pub type Hook<T> = Arc<Mutex<Option<Box<dyn FnMut(&mut T) + Send>>>>;

/// What the man in the middle rewrites.
#[derive(Default, Clone)]
pub struct Hooks {
    pub current_state: Hook<wire::State>,
    /// VerifiableSet's and VerifiableTxById's answers.
    pub verifiable_tx: Hook<wire::VerifiableTx>,
    pub verifiable_entry: Hook<wire::VerifiableEntry>,
    /// VerifiableGet answered with this status instead, when it gives one.
    pub verifiable_entry_status: Hook<Option<Status>>,
    pub consistency_proof: Hook<wire::StateProof>,
    /// Get's answer; `Err` to answer with a status instead.
    pub get: Hook<Result<wire::Entry, Status>>,
    /// Each message of a VerifiableStreamGet answer, in order.
    pub stream_get: Hook<wire::StreamGetResponse>,
    /// Each answer of a WriteStream, in order.
    pub write_answers: Hook<wire::WriteResponse>,
}

/// Sets `hook` to `f`.
pub fn set<T>(hook: &Hook<T>, f: impl FnMut(&mut T) + Send + 'static) {
    *hook.lock().unwrap() = Some(Box::new(f));
}

/// Clears `hook`: answers pass unchanged.
pub fn clear<T>(hook: &Hook<T>) {
    *hook.lock().unwrap() = None;
}

fn apply<T>(hook: &Hook<T>, v: &mut T) {
    if let Some(f) = hook.lock().unwrap().as_mut() {
        f(v);
    }
}

#[derive(Clone)]
struct Proxy {
    auth: auth_client::AuthClient<Channel>,
    data: data_client::DataClient<Channel>,
    hooks: Hooks,
}

fn upstream<T>(req: Request<T>) -> Request<T> {
    let (md, _, msg) = req.into_parts();
    let mut up = Request::new(msg);
    if let Some(a) = md.get("authorization") {
        up.metadata_mut().insert("authorization", a.clone());
    }
    up
}

/// A streamed answer relayed to the client.
type Answer = tokio_stream::wrappers::ReceiverStream<Result<wire::StreamGetResponse, Status>>;

/// Relays `up`'s messages, each through `hook` when given.
fn relay(
    mut up: tonic::Streaming<wire::StreamGetResponse>,
    hook: Option<Hook<wire::StreamGetResponse>>,
) -> Answer {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        loop {
            let m = match up.message().await {
                Ok(Some(mut m)) => {
                    if let Some(h) = &hook {
                        apply(h, &mut m);
                    }
                    Ok(m)
                }
                Ok(None) => return,
                Err(s) => Err(s),
            };
            let stop = m.is_err();
            if tx.send(m).await.is_err() || stop {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A client's request stream, forwarded upstream with its authorization.
fn forward(
    req: Request<tonic::Streaming<wire::StreamSetRequest>>,
) -> Request<impl tokio_stream::Stream<Item = wire::StreamSetRequest>> {
    use tokio_stream::StreamExt;
    let (md, _, stream) = req.into_parts();
    let mut up = Request::new(stream.map_while(Result::ok));
    if let Some(a) = md.get("authorization") {
        up.metadata_mut().insert("authorization", a.clone());
    }
    up
}

#[tonic::async_trait]
impl auth_server::Auth for Proxy {
    async fn login(
        &self,
        req: Request<wire::LoginRequest>,
    ) -> Result<Response<wire::LoginResponse>, Status> {
        self.auth.clone().login(upstream(req)).await
    }

    async fn logout(
        &self,
        req: Request<wire::LogoutRequest>,
    ) -> Result<Response<wire::LogoutResponse>, Status> {
        self.auth.clone().logout(upstream(req)).await
    }
}

#[tonic::async_trait]
impl data_server::Data for Proxy {
    async fn set(
        &self,
        req: Request<wire::SetRequest>,
    ) -> Result<Response<wire::TxHeader>, Status> {
        self.data.clone().set(upstream(req)).await
    }

    async fn delete(
        &self,
        req: Request<wire::DeleteRequest>,
    ) -> Result<Response<wire::TxHeader>, Status> {
        self.data.clone().delete(upstream(req)).await
    }

    async fn history(
        &self,
        req: Request<wire::HistoryRequest>,
    ) -> Result<Response<wire::HistoryResponse>, Status> {
        self.data.clone().history(upstream(req)).await
    }

    async fn scan(
        &self,
        req: Request<wire::ScanRequest>,
    ) -> Result<Response<wire::ScanResponse>, Status> {
        self.data.clone().scan(upstream(req)).await
    }

    async fn tx_by_id(
        &self,
        req: Request<wire::TxByIdRequest>,
    ) -> Result<Response<wire::Tx>, Status> {
        self.data.clone().tx_by_id(upstream(req)).await
    }

    async fn verifiable_get_all(
        &self,
        req: Request<wire::VerifiableGetAllRequest>,
    ) -> Result<Response<wire::VerifiableGetAllResponse>, Status> {
        self.data.clone().verifiable_get_all(upstream(req)).await
    }

    async fn exec_all(
        &self,
        req: Request<wire::ExecAllRequest>,
    ) -> Result<Response<wire::TxHeader>, Status> {
        self.data.clone().exec_all(upstream(req)).await
    }

    async fn get_all(
        &self,
        req: Request<wire::GetAllRequest>,
    ) -> Result<Response<wire::GetAllResponse>, Status> {
        self.data.clone().get_all(upstream(req)).await
    }

    async fn tx_scan(
        &self,
        req: Request<wire::TxScanRequest>,
    ) -> Result<Response<wire::TxScanResponse>, Status> {
        self.data.clone().tx_scan(upstream(req)).await
    }

    async fn count(
        &self,
        req: Request<wire::CountRequest>,
    ) -> Result<Response<wire::CountResponse>, Status> {
        self.data.clone().count(upstream(req)).await
    }

    type WriteStreamStream =
        tokio_stream::wrappers::ReceiverStream<Result<wire::WriteResponse, Status>>;

    async fn write_stream(
        &self,
        req: Request<tonic::Streaming<wire::WriteRequest>>,
    ) -> Result<Response<Self::WriteStreamStream>, Status> {
        use tokio_stream::StreamExt;
        let (md, _, stream) = req.into_parts();
        let mut up = Request::new(stream.map_while(Result::ok));
        if let Some(a) = md.get("authorization") {
            up.metadata_mut().insert("authorization", a.clone());
        }
        let mut answers = self.data.clone().write_stream(up).await?.into_inner();
        let hook = self.hooks.write_answers.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            loop {
                let m = match answers.message().await {
                    Ok(Some(mut m)) => {
                        apply(&hook, &mut m);
                        Ok(m)
                    }
                    Ok(None) => return,
                    Err(s) => Err(s),
                };
                let stop = m.is_err();
                if tx.send(m).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn stream_set(
        &self,
        req: Request<tonic::Streaming<wire::StreamSetRequest>>,
    ) -> Result<Response<wire::TxHeader>, Status> {
        self.data.clone().stream_set(forward(req)).await
    }

    type StreamGetStream = Answer;

    async fn stream_get(&self, req: Request<wire::GetRequest>) -> Result<Response<Answer>, Status> {
        let up = self
            .data
            .clone()
            .stream_get(upstream(req))
            .await?
            .into_inner();
        Ok(Response::new(relay(up, None)))
    }

    async fn verifiable_stream_set(
        &self,
        req: Request<tonic::Streaming<wire::StreamSetRequest>>,
    ) -> Result<Response<wire::VerifiableTx>, Status> {
        let mut answer = self
            .data
            .clone()
            .verifiable_stream_set(forward(req))
            .await?
            .into_inner();
        apply(&self.hooks.verifiable_tx, &mut answer);
        Ok(Response::new(answer))
    }

    type VerifiableStreamGetStream = Answer;

    async fn verifiable_stream_get(
        &self,
        req: Request<wire::VerifiableGetRequest>,
    ) -> Result<Response<Answer>, Status> {
        let up = self
            .data
            .clone()
            .verifiable_stream_get(upstream(req))
            .await?
            .into_inner();
        Ok(Response::new(relay(
            up,
            Some(self.hooks.stream_get.clone()),
        )))
    }

    async fn set_reference(
        &self,
        req: Request<wire::ReferenceRequest>,
    ) -> Result<Response<wire::TxHeader>, Status> {
        self.data.clone().set_reference(upstream(req)).await
    }

    async fn z_add(
        &self,
        req: Request<wire::ZAddRequest>,
    ) -> Result<Response<wire::TxHeader>, Status> {
        self.data.clone().z_add(upstream(req)).await
    }

    async fn z_scan(
        &self,
        req: Request<wire::ZScanRequest>,
    ) -> Result<Response<wire::ZScanResponse>, Status> {
        self.data.clone().z_scan(upstream(req)).await
    }

    async fn verifiable_set_reference(
        &self,
        req: Request<wire::VerifiableReferenceRequest>,
    ) -> Result<Response<wire::VerifiableTx>, Status> {
        let mut answer = self
            .data
            .clone()
            .verifiable_set_reference(upstream(req))
            .await?
            .into_inner();
        apply(&self.hooks.verifiable_tx, &mut answer);
        Ok(Response::new(answer))
    }

    async fn verifiable_z_add(
        &self,
        req: Request<wire::VerifiableZAddRequest>,
    ) -> Result<Response<wire::VerifiableTx>, Status> {
        let mut answer = self
            .data
            .clone()
            .verifiable_z_add(upstream(req))
            .await?
            .into_inner();
        apply(&self.hooks.verifiable_tx, &mut answer);
        Ok(Response::new(answer))
    }

    async fn verifiable_set(
        &self,
        req: Request<wire::VerifiableSetRequest>,
    ) -> Result<Response<wire::VerifiableTx>, Status> {
        let mut answer = self
            .data
            .clone()
            .verifiable_set(upstream(req))
            .await?
            .into_inner();
        apply(&self.hooks.verifiable_tx, &mut answer);
        Ok(Response::new(answer))
    }

    async fn verifiable_get(
        &self,
        req: Request<wire::VerifiableGetRequest>,
    ) -> Result<Response<wire::VerifiableEntry>, Status> {
        let mut answer = self
            .data
            .clone()
            .verifiable_get(upstream(req))
            .await?
            .into_inner();
        let mut status = None;
        apply(&self.hooks.verifiable_entry_status, &mut status);
        if let Some(s) = status {
            return Err(s);
        }
        apply(&self.hooks.verifiable_entry, &mut answer);
        Ok(Response::new(answer))
    }

    async fn verifiable_tx_by_id(
        &self,
        req: Request<wire::VerifiableTxByIdRequest>,
    ) -> Result<Response<wire::VerifiableTx>, Status> {
        let mut answer = self
            .data
            .clone()
            .verifiable_tx_by_id(upstream(req))
            .await?
            .into_inner();
        apply(&self.hooks.verifiable_tx, &mut answer);
        Ok(Response::new(answer))
    }

    async fn consistency_proof(
        &self,
        req: Request<wire::ConsistencyProofRequest>,
    ) -> Result<Response<wire::StateProof>, Status> {
        let mut answer = self
            .data
            .clone()
            .consistency_proof(upstream(req))
            .await?
            .into_inner();
        apply(&self.hooks.consistency_proof, &mut answer);
        Ok(Response::new(answer))
    }

    async fn current_state(
        &self,
        req: Request<wire::CurrentStateRequest>,
    ) -> Result<Response<wire::State>, Status> {
        let mut answer = self
            .data
            .clone()
            .current_state(upstream(req))
            .await?
            .into_inner();
        apply(&self.hooks.current_state, &mut answer);
        Ok(Response::new(answer))
    }

    async fn get(&self, req: Request<wire::GetRequest>) -> Result<Response<wire::Entry>, Status> {
        let mut answer = self
            .data
            .clone()
            .get(upstream(req))
            .await
            .map(Response::into_inner);
        apply(&self.hooks.get, &mut answer);
        answer.map(Response::new)
    }
}

/// A running man in the middle in front of `upstream_addr`.
pub struct Mitm {
    pub addr: String,
    pub hooks: Hooks,
    _task: tokio::task::JoinHandle<()>,
}

impl Drop for Mitm {
    fn drop(&mut self) {
        self._task.abort();
    }
}

/// Starts a man in the middle on a loopback port, forwarding to `upstream_addr`.
pub async fn start(upstream_addr: &str) -> Mitm {
    let channel = tonic::transport::Endpoint::from_shared(upstream_addr.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let hooks = Hooks::default();
    let proxy = Proxy {
        auth: auth_client::AuthClient::new(channel.clone()),
        data: data_client::DataClient::new(channel)
            .max_decoding_message_size(wire::MESSAGE_BYTES_MAX),
        hooks: hooks.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(auth_server::AuthServer::new(proxy.clone()))
            .add_service(data_server::DataServer::new(proxy))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    Mitm {
        addr,
        hooks,
        _task: task,
    }
}
