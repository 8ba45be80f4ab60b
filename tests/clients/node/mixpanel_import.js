#!/usr/bin/env node
/*
 * Import an NDJSON file of events into a local Ferry receiver with npm `mixpanel-import`.
 *
 *   node mixpanel_import.js --base-url http://127.0.0.1:PORT \
 *     --project-id ID --user U --secret S --file events.ndjson [--transport undici|got]
 *
 * Library defaults are kept (50 workers, 2000-record batches, gzip, strict=1,
 * transport "undici"); only the destination is changed, in two places, because
 * mixpanel-import has no host option:
 *   1. Job.prototype.url (components/job.js getter, used for the path and, with
 *      transport "got", the whole URL) is wrapped to swap its origin for --base-url.
 *   2. With the default transport "undici", importers.js sends every batch through
 *      a module-level undici Pool created at load time for https://api.mixpanel.com
 *      (api-eu / api-in likewise) and only takes the *path* from job.url. So
 *      undici.Pool is replaced, before mixpanel-import is loaded, by a subclass
 *      that swaps those origins for the --base-url origin.
 * Prints one JSON summary line on stdout; exits 0 only if every record read was
 * reported imported.
 */
'use strict';

const path = require('path');

function parseArgs(argv) {
	const out = {};
	for (let i = 0; i < argv.length; i++) {
		const a = argv[i];
		if (!a.startsWith('--')) throw new Error(`unexpected argument: ${a}`);
		const eq = a.indexOf('=');
		if (eq > 0) out[a.slice(2, eq)] = a.slice(eq + 1);
		else out[a.slice(2)] = argv[++i];
	}
	for (const k of ['base-url', 'project-id', 'user', 'secret', 'file']) {
		if (!out[k]) throw new Error(`missing --${k}`);
	}
	return out;
}

function usageExit(msg) {
	process.stderr.write(`${msg}\nusage: node mixpanel_import.js --base-url URL --project-id ID --user U --secret S --file events.ndjson [--transport undici|got]\n`);
	process.exit(2);
}

let args;
try {
	args = parseArgs(process.argv.slice(2));
} catch (e) {
	usageExit(e.message);
}

const base = new URL(args['base-url']);
if (!['http:', 'https:'].includes(base.protocol)) usageExit(`--base-url must be http(s): ${args['base-url']}`);
const basePath = base.pathname.replace(/\/+$/, '');
const MIXPANEL_ORIGINS = new Set([
	'https://api.mixpanel.com',
	'https://api-eu.mixpanel.com',
	'https://api-in.mixpanel.com',
]);

// --- (2) redirect the undici pools; must happen before mixpanel-import is required ---
const mpDir = path.dirname(require.resolve('mixpanel-import/package.json'));
const undici = require(require.resolve('undici', { paths: [mpDir] }));
const OriginalPool = undici.Pool;
const redirected = [];
class RedirectingPool extends OriginalPool {
	constructor(origin, opts) {
		const o = String(origin).replace(/\/+$/, '');
		if (MIXPANEL_ORIGINS.has(o)) {
			redirected.push(o);
			super(base.origin, opts);
		} else {
			super(origin, opts);
		}
	}
}
undici.Pool = RedirectingPool;

const mpImport = require('mixpanel-import');
const Job = require('mixpanel-import/components/job.js');
const mpVersion = require('mixpanel-import/package.json').version;
undici.Pool = OriginalPool;

// --- (1) redirect the URL getter ---
const urlDesc = Object.getOwnPropertyDescriptor(Job.prototype, 'url');
if (!urlDesc || typeof urlDesc.get !== 'function') {
	throw new Error(`mixpanel-import ${mpVersion}: Job.prototype.url getter not found; override needs updating`);
}
Object.defineProperty(Job.prototype, 'url', {
	configurable: true,
	enumerable: urlDesc.enumerable,
	get() {
		const original = new URL(urlDesc.get.call(this));
		return `${base.origin}${basePath}${original.pathname}${original.search}`;
	},
});

async function run() {
	const creds = { acct: args.user, pass: args.secret, project: args['project-id'] };
	// A non-empty opts object is required: with {} the library falls back to MP_* env vars.
	const opts = { recordType: 'event' };
	if (args.transport) opts.transport = args.transport;
	const file = path.resolve(args.file);

	let summary;
	let error = null;
	try {
		summary = await mpImport(creds, file, opts);
	} catch (e) {
		error = e && e.message ? e.message : String(e);
	}
	const s = summary || {};
	const out = {
		client: 'mixpanel-import',
		version: mpVersion,
		transport: args.transport || 'undici (default)',
		file,
		sent: s.total ?? null,
		success: s.success ?? null,
		failed: s.failed ?? null,
		empty: s.empty ?? null,
		unparsable: s.unparsable ?? null,
		requests: s.requests ?? null,
		batches: s.batches ?? null,
		retries: s.retries ?? null,
		rateLimit: s.rateLimit ?? null,
		serverErrors: s.serverErrors ?? null,
		clientErrors: s.clientErrors ?? null,
		errors: s.errors ?? null,
		bytes: s.bytes ?? null,
		duration_ms: s.duration ?? null,
		eps: s.eps ?? null,
		rps: s.rps ?? null,
		mbps: s.mbps ?? null,
		workers: s.workers ?? null,
		pools_redirected: redirected.length,
	};
	// The library's `failed` counts only failed_records entries; batches that end in a
	// non-2xx after all retries (e.g. persistent 429/5xx) are in neither success nor failed.
	if (typeof out.sent === 'number') out.unaccounted = out.sent - (out.success || 0) - (out.failed || 0);
	if (Array.isArray(s.responses)) {
		out.response_codes = {};
		for (const r of s.responses) {
			const c = String(r && r.code !== undefined ? r.code : 'none');
			out.response_codes[c] = (out.response_codes[c] || 0) + 1;
		}
	}
	if (error) out.error = error;
	const ok = !error && out.sent > 0 && out.failed === 0 && out.success === out.sent;
	// Exit explicitly once stdout is flushed (the exit code must not depend on open handles).
	process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(ok ? 0 : 1));
}

run().catch((e) => {
	process.stderr.write(`${e && e.stack ? e.stack : e}\n`);
	process.exit(1);
});
