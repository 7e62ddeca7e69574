//! Request bodies of upload endpoints: `multipart/form-data`, read as a
//! stream so that a file of any size passes through in small chunks.
//!
//! The text parts become parameters (each one small, all of them together
//! within [`MAX_TEXT_BYTES`]); the one file part is handed to the endpoint
//! chunk by chunk. Its part name becomes a parameter whose value is the
//! client's file name, as in Proxmox (`filename`).

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::StatusCode;

use crate::params::Params;
use crate::response::ApiError;

/// The most bytes of text parts a request may carry, in total.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// How much of a refused upload is read and discarded so that the client
/// gets the answer.
pub const DISCARD_LIMIT_BYTES: u64 = 16 << 20;

/// The body of an upload request, being read.
pub struct UploadBody {
    multipart: multer::Multipart<'static>,
    /// The file part, while it is being read.
    file: Option<multer::Field<'static>>,
    /// Whether a file part was seen.
    had_file: bool,
    text_bytes: usize,
}

impl std::fmt::Debug for UploadBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadBody")
            .field("reading_file", &self.file.is_some())
            .field("text_bytes", &self.text_bytes)
            .finish_non_exhaustive()
    }
}

fn read_error(e: &multer::Error) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        format!("cannot read the multipart upload body: {e}"),
    )
}

impl UploadBody {
    /// Starts reading `body`, which must be `multipart/form-data` with a
    /// boundary.
    pub fn new(content_type: Option<&str>, body: Incoming) -> Result<UploadBody, ApiError> {
        let content_type = content_type.unwrap_or("");
        let is_form_data = content_type
            .split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("multipart/form-data"));
        if !is_form_data {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("uploads must be multipart/form-data, not '{content_type}'"),
            ));
        }
        let boundary = multer::parse_boundary(content_type).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("bad multipart content type '{content_type}': {e}"),
            )
        })?;
        Ok(UploadBody {
            multipart: multer::Multipart::new(body.into_data_stream(), boundary),
            file: None,
            had_file: false,
            text_bytes: 0,
        })
    }

    /// Reads text parts into `params` up to the next file part or the end
    /// of the body. Returns the file part's client file name, if a file
    /// part follows (its part name is set to that file name in `params`).
    /// Finishes reading any file part still open first, discarding the
    /// rest of it.
    pub async fn read_fields(&mut self, params: &mut Params) -> Result<Option<String>, ApiError> {
        self.file = None;
        while let Some(mut field) = self
            .multipart
            .next_field()
            .await
            .map_err(|e| read_error(&e))?
        {
            let name = field.name().unwrap_or("").to_owned();
            if name.is_empty() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "a multipart part has no name",
                ));
            }
            if let Some(file_name) = field.file_name() {
                if self.had_file {
                    return Err(ApiError::parameter(
                        name,
                        "only one file may be uploaded per request",
                    ));
                }
                let file_name = file_name.to_owned();
                params.insert(name, file_name.clone());
                self.had_file = true;
                self.file = Some(field);
                return Ok(Some(file_name));
            }
            let mut value = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(|e| read_error(&e))? {
                self.text_bytes += chunk.len();
                if self.text_bytes > MAX_TEXT_BYTES {
                    return Err(ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("the text parts of the upload exceed {MAX_TEXT_BYTES} bytes"),
                    ));
                }
                value.extend_from_slice(&chunk);
            }
            let value = String::from_utf8(value)
                .map_err(|_| ApiError::parameter(name.clone(), "value is not valid UTF-8"))?;
            params.insert(name, value);
        }
        Ok(None)
    }

    /// Reads and discards the rest of the body, up to `max_bytes`, so that
    /// an answer sent before the file was read reaches the client instead
    /// of a reset connection. Larger rests are left unread (the connection
    /// then closes).
    pub async fn discard_rest(mut self, max_bytes: u64) {
        let mut seen = 0u64;
        loop {
            let field = match self.file.take() {
                Some(field) => Some(field),
                None => match self.multipart.next_field().await {
                    Ok(field) => field,
                    Err(_) => return,
                },
            };
            let Some(mut field) = field else {
                return;
            };
            while let Ok(Some(chunk)) = field.chunk().await {
                seen += chunk.len() as u64;
                if seen > max_bytes {
                    return;
                }
            }
        }
    }

    /// The next chunk of the file part found by [`Self::read_fields`];
    /// `None` at its end (or if there is none).
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, ApiError> {
        let Some(field) = self.file.as_mut() else {
            return Ok(None);
        };
        let chunk = field.chunk().await.map_err(|e| read_error(&e))?;
        if chunk.is_none() {
            self.file = None;
        }
        Ok(chunk)
    }
}
