/*
 * AWS credentials for S3, found in the AWS SDKs' default order; the first
 * source that is configured gives them:
 *
 *   1. environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
 *      [, AWS_SESSION_TOKEN];
 *   2. shared files: profile $AWS_PROFILE (else "default") of
 *      $AWS_SHARED_CREDENTIALS_FILE (~/.aws/credentials), then of
 *      $AWS_CONFIG_FILE (~/.aws/config, sections "[profile NAME]"):
 *      aws_access_key_id, aws_secret_access_key [, aws_session_token], or
 *      role_arn + web_identity_token_file (then as 3.);
 *   3. web identity (IRSA): AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN
 *      [+ AWS_ROLE_SESSION_NAME] -> STS AssumeRoleWithWebIdentity at
 *      $AWS_ENDPOINT_URL_STS, else $AWS_ENDPOINT_URL, else
 *      https://sts.REGION.amazonaws.com;
 *   4. container credentials (EKS Pod Identity, ECS):
 *      AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (under http://169.254.170.2)
 *      or _FULL_URI (https, or http to a loopback or the ECS/EKS agent
 *      address), with the Authorization header from
 *      AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (read at every fetch) or
 *      AWS_CONTAINER_AUTHORIZATION_TOKEN;
 *   5. EC2 instance metadata, IMDSv2 only (token by PUT, then the role's
 *      credentials), at $AWS_EC2_METADATA_SERVICE_ENDPOINT, else
 *      http://169.254.169.254 (http://[fd00:ec2::254] if
 *      AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6), unless
 *      AWS_EC2_METADATA_DISABLED=true;
 *      one-second time-outs, so a machine without IMDS fails fast.
 * A source that is not configured is passed over; one that is configured
 * but fails ends the search (as in the SDKs: a broken IRSA setup must not
 * fall back silently to the node's role).  The error names every source
 * tried and why each gave nothing.
 *
 * Temporary credentials (3.-5.) are fetched again from the same source
 * AWS_CREDS_REFRESH_MARGIN seconds before they expire, at most once every
 * AWS_CREDS_RETRY_INTERVAL seconds while that fails; until they expire
 * the old ones are still used.
 *
 * Secrets (secret keys, session and identity tokens) are never in a
 * message.
 *
 * Thread-safe: one mutex guards the current credentials; a refresh runs
 * under it (other callers wait, a few seconds at most).
 */
#ifndef CBTFS_AWS_CREDS_H
#define CBTFS_AWS_CREDS_H

#include <time.h>

#define AWS_CREDS_REFRESH_MARGIN 300
#define AWS_CREDS_RETRY_INTERVAL 10

struct aws_creds {
	char *access_key;
	char *secret_key;
	char *token;		/* session token, or NULL */
	time_t expires;		/* 0: does not expire */
};

struct aws_creds_provider;

/*
 * Finds credentials.  what names the user for messages ("s3://bucket").
 * Returns the provider, or NULL with *errp (EACCES: none found, or a
 * source broken; ENOMEM) after logging one message that lists the sources
 * tried and why each failed.
 */
struct aws_creds_provider *aws_creds_open(const char *what, int *errp);

/*
 * Copies the current credentials into *out (the caller frees them with
 * aws_creds_clear()), refreshing them first if they expire within
 * AWS_CREDS_REFRESH_MARGIN seconds.  Returns 0, or EACCES after logging
 * when they have expired and the refresh failed, or ENOMEM.  A refresh
 * that fails while the old credentials are still valid is logged as a
 * warning and returns them.
 */
int aws_creds_get(struct aws_creds_provider *p, struct aws_creds *out);

/* Where the credentials came from, for messages: "environment",
 * "web identity (STS at URL)"... */
const char *aws_creds_source(const struct aws_creds_provider *p);

/* Wipes and frees what c holds; c may be zeroed or partly filled. */
void aws_creds_clear(struct aws_creds *c);

void aws_creds_close(struct aws_creds_provider *p);

#endif
