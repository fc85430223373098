//! JSON-RPC 2.0 API over HTTP (see the helper task).
