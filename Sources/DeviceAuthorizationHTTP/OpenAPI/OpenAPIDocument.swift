/// The HTTP API as an OpenAPI 3 document, served at `GET /openapi.json`.
///
/// Kept next to the routes so a change to one shows up in the review of the other;
/// `OpenAPITests` checks that every route is documented, and `make test-security` runs
/// schemathesis against a live server with this document.
enum OpenAPIDocument {
    static let json = #"""
{
 "openapi": "3.0.3",
 "info": {
  "title": "deviceauth: RFC 8628 device authorization server",
  "version": "1.0.0",
  "description": "OAuth 2.0 Device Authorization Grant (RFC 8628) with a verification page, refresh tokens with rotation (RFC 6749 \u00a76, RFC 9700), revocation (RFC 7009) and introspection (RFC 7662). Errors of the OAuth endpoints are RFC 6749 \u00a75.2 JSON bodies with `Cache-Control: no-store`; the verification page answers with HTML. Over a rate limit the answer is HTTP 429 with `Retry-After` and the error `temporarily_unavailable`. Confidential clients authenticate with HTTP Basic (`client_secret_basic`) or `client_secret` in the form; public clients send `client_id` only. Every parameter may appear at most once and a body may carry at most 64 parameters by default (400 `invalid_request`, \"too many parameters\"); request bodies are limited to 16 KiB by default (413). A path that is not exactly one of these is 404."
 },
 "paths": {
  "/oauth/device_authorization": {
   "post": {
    "operationId": "deviceAuthorization",
    "summary": "Device authorization request (RFC 8628 \u00a73.1\u20133.2)",
    "requestBody": {
     "required": true,
     "content": {
      "application/x-www-form-urlencoded": {
       "schema": {
        "$ref": "#/components/schemas/DeviceAuthorizationRequest"
       }
      }
     }
    },
    "responses": {
     "200": {
      "description": "Device and user code (RFC 8628 \u00a73.2).",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/DeviceAuthorizationResponse"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "401": {
      "description": "`invalid_client`: unknown client, or client authentication failed (RFC 6749 \u00a75.2).",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/OAuthError"
        }
       }
      },
      "headers": {
       "WWW-Authenticate": {
        "description": "HTTP Basic challenge (RFC 6749 \u00a75.2)",
        "schema": {
         "type": "string"
        },
        "required": true
       }
      }
     },
     "413": {
      "$ref": "#/components/responses/TooLarge"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "500": {
      "$ref": "#/components/responses/ServerError"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    }
   }
  },
  "/oauth/token": {
   "post": {
    "operationId": "token",
    "summary": "Token request: device code (RFC 8628 \u00a73.4\u20133.5) or refresh token (RFC 6749 \u00a76)",
    "description": "While the person has not decided: 400 `authorization_pending`, or `slow_down` (with the new `interval`) when polling too fast. Then the token once (200), `access_denied`, `expired_token`, or `invalid_grant` (unknown, wrong client, already redeemed). Too many unknown device codes from one address: 429. With `grant_type=refresh_token` (client-authenticated as for the device code): the presented refresh token is consumed and a new pair issued, once; `invalid_grant` for an unknown, expired, revoked or other client's token, and for a token that was already rotated, which also revokes its whole family (RFC 9700 \u00a74.14); `invalid_scope` when `scope` asks for more than was granted. A redemption or refresh returns a `refresh_token` when the client has refresh tokens enabled or the grant has `offline_access`.",
    "requestBody": {
     "required": true,
     "content": {
      "application/x-www-form-urlencoded": {
       "schema": {
        "$ref": "#/components/schemas/TokenRequest"
       }
      }
     }
    },
    "responses": {
     "200": {
      "description": "Access token (RFC 6749 \u00a75.1).",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/TokenResponse"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadRequest"
     },
     "401": {
      "description": "`invalid_client`: unknown client, or client authentication failed (RFC 6749 \u00a75.2).",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/OAuthError"
        }
       }
      },
      "headers": {
       "WWW-Authenticate": {
        "description": "HTTP Basic challenge (RFC 6749 \u00a75.2)",
        "schema": {
         "type": "string"
        },
        "required": true
       }
      }
     },
     "413": {
      "$ref": "#/components/responses/TooLarge"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "500": {
      "$ref": "#/components/responses/ServerError"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    }
   }
  },
  "/oauth/revoke": {
   "post": {
    "operationId": "revoke",
    "summary": "Token revocation (RFC 7009)",
    "description": "For the client the token was issued to. A refresh token (live or already rotated) revokes its whole family, and the family's recent access tokens are denylisted until they expire; an access token is denylisted until its `exp`. `token_type_hint` is accepted and not needed. Unknown, expired and malformed tokens get 200 too (RFC 7009 \u00a72.2).",
    "requestBody": {
     "required": true,
     "content": {
      "application/x-www-form-urlencoded": {
       "schema": {
        "$ref": "#/components/schemas/TokenManagementRequest"
       }
      }
     }
    },
    "responses": {
     "200": {
      "description": "Revoked, or nothing to revoke (RFC 7009 \u00a72.2).",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Empty"
        }
       }
      }
     },
     "400": {
      "description": "`invalid_request` (missing `token`, malformed body), `unauthorized_client` (revocation: the token was issued to another client) (RFC 6749 \u00a75.2).",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/OAuthError"
        }
       }
      }
     },
     "401": {
      "description": "`invalid_client`: unknown client, or client authentication failed (RFC 6749 \u00a75.2).",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/OAuthError"
        }
       }
      },
      "headers": {
       "WWW-Authenticate": {
        "description": "HTTP Basic challenge (RFC 6749 \u00a75.2)",
        "schema": {
         "type": "string"
        },
        "required": true
       }
      }
     },
     "413": {
      "$ref": "#/components/responses/TooLarge"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "500": {
      "$ref": "#/components/responses/ServerError"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    }
   }
  },
  "/oauth/introspect": {
   "post": {
    "operationId": "introspect",
    "summary": "Token introspection (RFC 7662)",
    "description": "For confidential clients (resource servers registered with a secret); public clients get 401 `invalid_client`. `{\"active\": false}` for expired, revoked, denylisted, rotated, foreign or unknown tokens; otherwise the token's `scope`, `client_id`, `sub`, `exp`, `iat`, `token_type`, and for access tokens `jti`, `iss`, `aud`.",
    "requestBody": {
     "required": true,
     "content": {
      "application/x-www-form-urlencoded": {
       "schema": {
        "$ref": "#/components/schemas/TokenManagementRequest"
       }
      }
     }
    },
    "responses": {
     "200": {
      "description": "The token's state (RFC 7662 \u00a72.2).",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/IntrospectionResponse"
        }
       }
      }
     },
     "400": {
      "description": "`invalid_request` (missing `token`, malformed body), `unauthorized_client` (revocation: the token was issued to another client) (RFC 6749 \u00a75.2).",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/OAuthError"
        }
       }
      }
     },
     "401": {
      "description": "`invalid_client`: unknown client, a public client, or client authentication failed (RFC 6749 \u00a75.2).",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/OAuthError"
        }
       }
      },
      "headers": {
       "WWW-Authenticate": {
        "description": "HTTP Basic challenge (RFC 6749 \u00a75.2)",
        "schema": {
         "type": "string"
        },
        "required": true
       }
      }
     },
     "413": {
      "$ref": "#/components/responses/TooLarge"
     },
     "429": {
      "$ref": "#/components/responses/RateLimited"
     },
     "500": {
      "$ref": "#/components/responses/ServerError"
     },
     "503": {
      "$ref": "#/components/responses/Unavailable"
     }
    }
   }
  },
  "/device": {
   "get": {
    "operationId": "verificationPage",
    "summary": "Verification page: enter a code, or confirm `user_code` (RFC 8628 \u00a73.3)",
    "parameters": [
     {
      "name": "user_code",
      "in": "query",
      "required": false,
      "schema": {
       "type": "string"
      },
      "description": "From `verification_uri_complete`; case and dashes do not matter."
     }
    ],
    "responses": {
     "200": {
      "description": "Sign-in, code entry or confirmation page.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "400": {
      "description": "Not a valid code.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "401": {
      "description": "Sign-in required.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "404": {
      "description": "No request has this code.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "409": {
      "description": "The code was already used.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "410": {
      "description": "The code expired.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "429": {
      "description": "Too many wrong codes from this address, or from everyone.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      },
      "headers": {
       "Retry-After": {
        "$ref": "#/components/headers/RetryAfter"
       }
      }
     },
     "500": {
      "description": "Unexpected failure.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "503": {
      "description": "Redis unreachable.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      },
      "headers": {
       "Retry-After": {
        "$ref": "#/components/headers/RetryAfter"
       }
      }
     }
    }
   },
   "post": {
    "operationId": "verificationSubmit",
    "summary": "Look up, approve or deny a code (CSRF-protected)",
    "requestBody": {
     "required": true,
     "content": {
      "application/x-www-form-urlencoded": {
       "schema": {
        "$ref": "#/components/schemas/VerificationForm"
       }
      }
     }
    },
    "responses": {
     "200": {
      "description": "Confirmation, result or sign-in page.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "400": {
      "description": "Unreadable form, invalid code or unknown action.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "401": {
      "description": "Sign-in required.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "403": {
      "description": "Missing or invalid CSRF token.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "404": {
      "description": "No request has this code.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "409": {
      "description": "Already used, or the code now belongs to another request.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "410": {
      "description": "The code expired.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "413": {
      "description": "The form is larger than the limit.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "429": {
      "description": "Too many wrong codes.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      },
      "headers": {
       "Retry-After": {
        "$ref": "#/components/headers/RetryAfter"
       }
      }
     },
     "500": {
      "description": "Unexpected failure.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "503": {
      "description": "Redis unreachable.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      },
      "headers": {
       "Retry-After": {
        "$ref": "#/components/headers/RetryAfter"
       }
      }
     }
    }
   }
  },
  "/device/login": {
   "post": {
    "operationId": "login",
    "summary": "Development sign-in form (only with configured development users)",
    "requestBody": {
     "required": true,
     "content": {
      "application/x-www-form-urlencoded": {
       "schema": {
        "$ref": "#/components/schemas/LoginForm"
       }
      }
     }
    },
    "responses": {
     "303": {
      "description": "Signed in; back to the verification page.",
      "headers": {
       "Location": {
        "schema": {
         "type": "string"
        },
        "required": true
       },
       "Set-Cookie": {
        "schema": {
         "type": "string"
        },
        "required": true
       }
      }
     },
     "200": {
      "description": "Sign-in page.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "400": {
      "description": "Unreadable form.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "401": {
      "description": "Wrong user name or password.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "403": {
      "description": "Missing or invalid CSRF token.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "404": {
      "description": "Sign-in through the organization's login only.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "500": {
      "description": "Unexpected failure.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "503": {
      "description": "Redis unreachable.",
      "content": {
       "text/html": {
        "schema": {
         "type": "string"
        }
       }
      },
      "headers": {
       "Retry-After": {
        "$ref": "#/components/headers/RetryAfter"
       }
      }
     }
    }
   }
  },
  "/.well-known/oauth-authorization-server": {
   "get": {
    "operationId": "metadata",
    "summary": "Authorization server metadata (RFC 8414)",
    "responses": {
     "200": {
      "description": "Metadata.",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/ServerMetadata"
        }
       }
      }
     }
    }
   }
  },
  "/.well-known/jwks.json": {
   "get": {
    "operationId": "jwks",
    "summary": "The token signing key (RFC 7517)",
    "responses": {
     "200": {
      "description": "JSON Web Key Set.",
      "content": {
       "application/jwk-set+json": {
        "schema": {
         "$ref": "#/components/schemas/JWKSet"
        }
       }
      }
     },
     "404": {
      "description": "This server publishes no keys.",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/SimpleError"
        }
       }
      }
     }
    }
   }
  },
  "/healthz": {
   "get": {
    "operationId": "health",
    "summary": "Liveness",
    "responses": {
     "200": {
      "description": "Alive.",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Status"
        }
       }
      }
     }
    }
   }
  },
  "/readyz": {
   "get": {
    "operationId": "ready",
    "summary": "Readiness (Redis reachable)",
    "responses": {
     "200": {
      "description": "Ready.",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Status"
        }
       }
      }
     },
     "503": {
      "description": "Redis unreachable.",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Status"
        }
       }
      },
      "headers": {
       "Retry-After": {
        "$ref": "#/components/headers/RetryAfter"
       }
      }
     }
    }
   }
  },
  "/metrics": {
   "get": {
    "operationId": "metrics",
    "summary": "Prometheus metrics",
    "responses": {
     "200": {
      "description": "Prometheus text format 0.0.4.",
      "content": {
       "text/plain": {
        "schema": {
         "type": "string"
        }
       }
      }
     },
     "404": {
      "description": "The metrics are served on a listener of their own (`metrics_port`), not this one."
     }
    }
   }
  },
  "/openapi.json": {
   "get": {
    "operationId": "openapi",
    "summary": "This document",
    "responses": {
     "200": {
      "description": "OpenAPI 3 document.",
      "content": {
       "application/json": {
        "schema": {
         "type": "object"
        }
       }
      }
     }
    }
   }
  }
 },
 "components": {
  "headers": {
   "RetryAfter": {
    "description": "Seconds until a retry can succeed.",
    "schema": {
     "type": "integer",
     "minimum": 1
    },
    "required": true
   }
  },
  "responses": {
   "BadRequest": {
    "description": "`invalid_request` (including a repeated parameter and too many parameters), `invalid_scope`, `unsupported_grant_type`, `invalid_grant`, `authorization_pending`, `slow_down`, `access_denied`, `expired_token` (RFC 6749 \u00a75.2, RFC 8628 \u00a73.5).",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/OAuthError"
      }
     }
    }
   },
   "TooLarge": {
    "description": "`invalid_request`: the body is larger than the limit.",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/OAuthError"
      }
     }
    }
   },
   "RateLimited": {
    "description": "`temporarily_unavailable`: over a rate limit (per client IP or per client), including too many failed authentications of a confidential client or from one address (then the right secret is refused too until `Retry-After`).",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/OAuthError"
      }
     }
    },
    "headers": {
     "Retry-After": {
      "$ref": "#/components/headers/RetryAfter"
     }
    }
   },
   "ServerError": {
    "description": "`server_error`.",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/OAuthError"
      }
     }
    }
   },
   "Unavailable": {
    "description": "`temporarily_unavailable`: Redis cannot be reached.",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/OAuthError"
      }
     }
    },
    "headers": {
     "Retry-After": {
      "$ref": "#/components/headers/RetryAfter"
     }
    }
   }
  },
  "schemas": {
   "DeviceAuthorizationRequest": {
    "type": "object",
    "required": [
     "client_id"
    ],
    "properties": {
     "client_id": {
      "type": "string",
      "minLength": 1,
      "description": "Optional when the client authenticates with HTTP Basic."
     },
     "scope": {
      "type": "string",
      "description": "Space-separated scopes (RFC 6749 \u00a73.3)."
     },
     "client_secret": {
      "type": "string",
      "description": "Confidential clients, instead of HTTP Basic."
     }
    }
   },
   "DeviceAuthorizationResponse": {
    "type": "object",
    "additionalProperties": false,
    "required": [
     "device_code",
     "user_code",
     "verification_uri",
     "verification_uri_complete",
     "expires_in",
     "interval"
    ],
    "properties": {
     "device_code": {
      "type": "string",
      "pattern": "^[0-9a-f]{4}\\.[A-Za-z0-9_-]{43}$"
     },
     "user_code": {
      "type": "string",
      "pattern": "^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$"
     },
     "verification_uri": {
      "type": "string"
     },
     "verification_uri_complete": {
      "type": "string"
     },
     "expires_in": {
      "type": "integer",
      "minimum": 1
     },
     "interval": {
      "type": "integer",
      "minimum": 0
     }
    }
   },
   "TokenRequest": {
    "type": "object",
    "required": [
     "grant_type"
    ],
    "properties": {
     "grant_type": {
      "type": "string",
      "enum": [
       "urn:ietf:params:oauth:grant-type:device_code",
       "refresh_token"
      ]
     },
     "device_code": {
      "type": "string",
      "minLength": 1
     },
     "client_id": {
      "type": "string",
      "minLength": 1
     },
     "client_secret": {
      "type": "string"
     },
     "refresh_token": {
      "type": "string",
      "minLength": 1
     },
     "scope": {
      "type": "string"
     }
    },
    "description": "`device_code` is required with the device-code grant, `refresh_token` with `refresh_token`; `client_id` unless the client authenticates with HTTP Basic."
   },
   "TokenResponse": {
    "type": "object",
    "additionalProperties": false,
    "required": [
     "access_token",
     "token_type",
     "expires_in"
    ],
    "properties": {
     "access_token": {
      "type": "string"
     },
     "token_type": {
      "type": "string",
      "enum": [
       "Bearer"
      ]
     },
     "expires_in": {
      "type": "integer",
      "minimum": 1
     },
     "scope": {
      "type": "string"
     },
     "refresh_token": {
      "type": "string"
     }
    }
   },
   "OAuthError": {
    "type": "object",
    "additionalProperties": false,
    "required": [
     "error",
     "error_description"
    ],
    "properties": {
     "error": {
      "type": "string",
      "enum": [
       "invalid_request",
       "invalid_client",
       "invalid_grant",
       "unauthorized_client",
       "unsupported_grant_type",
       "invalid_scope",
       "authorization_pending",
       "slow_down",
       "access_denied",
       "expired_token",
       "temporarily_unavailable",
       "server_error"
      ]
     },
     "error_description": {
      "type": "string",
      "pattern": "^[\\x20-\\x21\\x23-\\x5B\\x5D-\\x7E]*$",
      "description": "RFC 6749 \u00a75.2: printable ASCII except \" and \\."
     },
     "interval": {
      "type": "integer",
      "minimum": 1,
      "description": "With `slow_down`: the interval to use from now on."
     }
    }
   },
   "VerificationForm": {
    "type": "object",
    "required": [
     "csrf_token",
     "action"
    ],
    "properties": {
     "csrf_token": {
      "type": "string"
     },
     "action": {
      "type": "string",
      "enum": [
       "lookup",
       "approve",
       "deny"
      ]
     },
     "user_code": {
      "type": "string"
     },
     "grant_id": {
      "type": "string"
     }
    }
   },
   "LoginForm": {
    "type": "object",
    "required": [
     "csrf_token",
     "username",
     "password"
    ],
    "properties": {
     "csrf_token": {
      "type": "string"
     },
     "username": {
      "type": "string"
     },
     "password": {
      "type": "string"
     },
     "user_code": {
      "type": "string"
     }
    }
   },
   "ServerMetadata": {
    "type": "object",
    "required": [
     "issuer",
     "device_authorization_endpoint",
     "token_endpoint",
     "grant_types_supported"
    ],
    "properties": {
     "issuer": {
      "type": "string"
     },
     "device_authorization_endpoint": {
      "type": "string"
     },
     "token_endpoint": {
      "type": "string"
     },
     "jwks_uri": {
      "type": "string"
     },
     "grant_types_supported": {
      "type": "array",
      "items": {
       "type": "string"
      }
     },
     "response_types_supported": {
      "type": "array",
      "items": {
       "type": "string"
      }
     },
     "token_endpoint_auth_methods_supported": {
      "type": "array",
      "items": {
       "type": "string"
      }
     },
     "revocation_endpoint": {
      "type": "string"
     },
     "introspection_endpoint": {
      "type": "string"
     },
     "revocation_endpoint_auth_methods_supported": {
      "type": "array",
      "items": {
       "type": "string"
      }
     },
     "introspection_endpoint_auth_methods_supported": {
      "type": "array",
      "items": {
       "type": "string"
      }
     }
    }
   },
   "JWKSet": {
    "type": "object",
    "required": [
     "keys"
    ],
    "properties": {
     "keys": {
      "type": "array",
      "items": {
       "type": "object",
       "required": [
        "kty"
       ],
       "properties": {
        "kty": {
         "type": "string"
        }
       }
      }
     }
    }
   },
   "SimpleError": {
    "type": "object",
    "required": [
     "error"
    ],
    "properties": {
     "error": {
      "type": "string"
     },
     "error_description": {
      "type": "string"
     }
    }
   },
   "Status": {
    "type": "object",
    "required": [
     "status"
    ],
    "properties": {
     "status": {
      "type": "string"
     },
     "redis": {
      "type": "string"
     }
    }
   },
   "TokenManagementRequest": {
    "type": "object",
    "required": [
     "token"
    ],
    "properties": {
     "token": {
      "type": "string",
      "minLength": 1
     },
     "token_type_hint": {
      "type": "string"
     },
     "client_id": {
      "type": "string",
      "minLength": 1
     },
     "client_secret": {
      "type": "string"
     }
    }
   },
   "IntrospectionResponse": {
    "type": "object",
    "required": [
     "active"
    ],
    "additionalProperties": false,
    "properties": {
     "active": {
      "type": "boolean"
     },
     "scope": {
      "type": "string"
     },
     "client_id": {
      "type": "string"
     },
     "sub": {
      "type": "string"
     },
     "exp": {
      "type": "integer"
     },
     "iat": {
      "type": "integer"
     },
     "token_type": {
      "type": "string",
      "enum": [
       "Bearer",
       "refresh_token"
      ]
     },
     "jti": {
      "type": "string"
     },
     "iss": {
      "type": "string"
     },
     "aud": {
      "type": "array",
      "items": {
       "type": "string"
      }
     },
     "sid": {
      "type": "string"
     }
    }
   },
   "Empty": {
    "type": "object",
    "additionalProperties": false,
    "properties": {}
   }
  }
 }
}
"""#
}
