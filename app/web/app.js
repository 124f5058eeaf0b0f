/*
 * The registry's catalog page. It reads only the static registry documents stored beside it (v2/_catalog,
 * v2/<name>/tags/list, manifests, config blobs, referrers indexes) through URLs relative to its own, so it works
 * at the root of a linksharing domain, under a prefix, and through the service alike. Plain JavaScript, no build
 * step, no third-party request and no inline script or style, so a strict Content-Security-Policy allows it.
 *
 * Large registries: rows are rendered a page at a time and each row reads its details only once it scrolls
 * into view, so a catalog of thousands of repositories costs one request plus the rows on screen.
 */
(function () {
  'use strict';

  var NAME_RE = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
  var TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
  var DIGEST_RE = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
  var JSON_DIGEST_RE = /"((?:sha256:[0-9a-f]{64})|(?:sha512:[0-9a-f]{128}))"/g;
  var PAGE_SIZE = 100;
  var PARALLEL_REQUESTS = 6;
  // The most of a config blob the page reads (one Range request): a config's declared size is the pusher's word,
  // and on Storj every byte read is egress billed to the bucket's owner.
  var MAX_CONFIG_BYTES = 64 * 1024;
  var OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
  var DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
  var OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
  var DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
  var IMAGE_CONFIGS = ['application/vnd.oci.image.config.v1+json', 'application/vnd.docker.container.image.v1+json'];
  var MANIFEST_ACCEPT = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST].join(', ');
  var SHORT_TYPES = {};
  SHORT_TYPES[OCI_INDEX] = 'OCI index';
  SHORT_TYPES[DOCKER_LIST] = 'Docker manifest list';
  SHORT_TYPES[OCI_MANIFEST] = 'OCI image';
  SHORT_TYPES[DOCKER_MANIFEST] = 'Docker image';
  var NOT_RECORDED = 'not recorded';
  var GENERIC_TYPES = ['', 'application/json', 'application/octet-stream', 'binary/octet-stream', 'text/plain'];

  // ---- small pure helpers (exported for the browser tests) --------------------------------------------------

  /** The view a location hash names: `#/`, `#/<name>`, `#/<name>:<tag>` or `#/<name>@<digest>`; null if not a route. */
  function parseRoute(hash) {
    if (hash !== '' && hash !== '#' && hash.indexOf('#/') !== 0) return null;
    var path;
    try {
      path = decodeURIComponent(hash.replace(/^#\/?/, ''));
    } catch (e) {
      return { view: 'invalid', text: hash };
    }
    if (path === '') return { view: 'catalog' };
    var at = path.indexOf('@');
    if (at >= 0) return checked({ view: 'manifest', name: path.slice(0, at), digest: path.slice(at + 1) }, path);
    var colon = path.lastIndexOf(':');
    if (colon > path.lastIndexOf('/')) {
      return checked({ view: 'manifest', name: path.slice(0, colon), tag: path.slice(colon + 1) }, path);
    }
    return checked({ view: 'repository', name: path }, path);
  }

  function checked(route, text) {
    var ok = NAME_RE.test(route.name) && route.name.length <= 255;
    if (route.tag !== undefined) ok = ok && TAG_RE.test(route.tag);
    if (route.digest !== undefined) ok = ok && DIGEST_RE.test(route.digest);
    return ok ? route : { view: 'invalid', text: text };
  }

  function link(name, reference) {
    if (reference === undefined) return '#/' + name;
    return '#/' + name + (reference.indexOf(':') >= 0 ? '@' : ':') + reference; // digests have a colon, tags never
  }

  function formatSize(bytes) {
    if (typeof bytes !== 'number' || !isFinite(bytes) || bytes < 0) return '—';
    var units = ['B', 'kB', 'MB', 'GB', 'TB'];
    var value = bytes;
    var unit = 0;
    while (value >= 1000 && unit < units.length - 1) {
      value /= 1000;
      unit += 1;
    }
    if (unit === 0) return value + ' B';
    return value.toFixed(value < 10 ? 2 : value < 100 ? 1 : 0) + ' ' + units[unit];
  }

  function formatDate(date) {
    if (!(date instanceof Date) || isNaN(date.getTime())) return '—';
    return date.toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
  }

  function shortDigest(digest) {
    if (typeof digest !== 'string') return '—';
    var parts = digest.split(':');
    return parts.length === 2 ? parts[0] + ':' + parts[1].slice(0, 12) : digest;
  }

  function shortType(mediaType) {
    return SHORT_TYPES[mediaType] || mediaType || '—';
  }

  function isIndex(mediaType, doc) {
    return mediaType === OCI_INDEX || mediaType === DOCKER_LIST || (!!doc && Array.isArray(doc.manifests));
  }

  function platformName(platform) {
    if (!platform || !platform.os) return 'unknown';
    return [platform.os, platform.architecture, platform.variant].filter(Boolean).join('/');
  }

  /** Children of an index that are images for a platform (not buildx attestations). */
  function platformChildren(doc) {
    return (doc.manifests || []).filter(function (child) {
      var annotations = child.annotations || {};
      return child.platform && child.platform.os !== 'unknown' &&
        annotations['vnd.docker.reference.type'] !== 'attestation-manifest';
    });
  }

  function layersSize(doc) {
    return (doc.layers || []).reduce(function (sum, layer) {
      return sum + (typeof layer.size === 'number' ? layer.size : 0);
    }, 0);
  }

  function artifactTypeOf(doc) {
    if (doc.artifactType) return doc.artifactType;
    var config = doc.config || {};
    if (config.mediaType && IMAGE_CONFIGS.indexOf(config.mediaType) < 0) return config.mediaType;
    return null;
  }

  function naturalCompare(a, b) {
    return a.localeCompare(b, 'en', { numeric: true });
  }

  // ---- reading the static documents ---------------------------------------------------------------------------

  var base = new URL('./', location.href);
  var host = location.host;

  function HttpError(status, path) {
    this.status = status;
    this.path = path;
    this.message = status === 401 || status === 403
      ? 'The registry wants credentials to read ' + path + ' (HTTP ' + status + ').'
      : 'Could not read ' + path + ' (HTTP ' + status + ').';
  }
  HttpError.prototype = Object.create(Error.prototype);

  /** Run at most `size` requests at once; only leaf requests go through it, so nothing waits on itself. */
  function pool(size) {
    var active = 0;
    var waiting = [];
    function next() {
      if (active >= size || waiting.length === 0) return;
      var job = waiting.shift();
      active += 1;
      job.run().then(job.resolve, job.reject).then(function () {
        active -= 1;
        next();
      });
    }
    return function (run) {
      return new Promise(function (resolve, reject) {
        waiting.push({ run: run, resolve: resolve, reject: reject });
        next();
      });
    };
  }
  var limited = pool(PARALLEL_REQUESTS);

  var generation = 0; // the current view's number: work for an earlier view stops when it sees another
  var observers = []; // the current view's row observers, disconnected when it is left

  // Documents under a digest never change; tag-named ones are forgotten on every navigation.
  var lasting = new Map();
  var fresh = new Map();
  function remember(key, stable, load) {
    var cache = stable ? lasting : fresh;
    if (!cache.has(key)) {
      cache.set(key, load().catch(function (error) {
        cache.delete(key);
        throw error;
      }));
    }
    return cache.get(key);
  }

  /** GET `path` relative to the page: {bytes, headers, url}, or null when the registry has no such document. */
  function get(path, accept) {
    return limited(function () {
      var headers = accept ? { Accept: accept } : {};
      return fetch(new URL(path, base).href, { headers: headers, credentials: 'same-origin' }).then(function (res) {
        if (res.status === 404) return null;
        if (!res.ok) throw new HttpError(res.status, path);
        return res.arrayBuffer().then(function (bytes) {
          return { bytes: bytes, headers: res.headers, url: res.url };
        });
      });
    });
  }

  /**
   * At most the first `max` bytes of `path`, with one Range request: {bytes, whole}, or null when absent. `whole`
   * is told by the length alone (fewer than `max` bytes came, so the object ended): Content-Range is no header a
   * page may read from another origin, where the service redirects blob reads. A server that ignores Range and
   * answers 200 is read no further than `max` bytes either.
   */
  function getPrefix(path, max) {
    return limited(function () {
      var headers = { Range: 'bytes=0-' + (max - 1) };
      return fetch(new URL(path, base).href, { headers: headers, credentials: 'same-origin' }).then(function (res) {
        if (res.status === 404) return null;
        if (!res.ok) throw new HttpError(res.status, path);
        return readAtMost(res, max).then(function (bytes) {
          return { bytes: bytes, whole: bytes.byteLength < max };
        });
      });
    });
  }

  /** At most `max` bytes of a response body; past them the download is cancelled. */
  function readAtMost(res, max) {
    var reader = res.body.getReader();
    var bytes = new Uint8Array(max);
    var length = 0;
    function next() {
      return reader.read().then(function (step) {
        if (step.done) return bytes.buffer.slice(0, length);
        var part = step.value.subarray(0, max - length);
        bytes.set(part, length);
        length += part.length;
        if (length === max) return reader.cancel().then(function () { return bytes.buffer; });
        return next();
      });
    }
    return next();
  }

  function parseJSON(bytes, path) {
    try {
      return JSON.parse(new TextDecoder().decode(bytes));
    } catch (e) {
      throw new Error(path + ' is not valid JSON.');
    }
  }

  /** Every entry of a listing document, following `Link: rel="next"` when the service pages it. */
  function listAll(path, field) {
    return remember('list ' + path, false, function () {
      var items = [];
      function page(url) {
        return get(url).then(function (found) {
          if (found === null) return items.length ? items : null;
          items = items.concat(parseJSON(found.bytes, path)[field] || []);
          var next = /<([^>]+)>\s*;\s*rel="?next"?/.exec(found.headers.get('Link') || '');
          return next ? page(new URL(next[1], found.url).href) : items;
        });
      }
      return page(path);
    });
  }

  /** The sha256 digest of a manifest's bytes: what `@sha256:…` pulls need when no header names it. */
  function sha256(bytes) {
    if (!window.crypto || !crypto.subtle) return Promise.resolve('sha256:' + sha256Hex(bytes)); // plain HTTP
    return crypto.subtle.digest('SHA-256', bytes).then(function (hash) {
      return 'sha256:' + Array.prototype.map.call(new Uint8Array(hash), function (b) {
        return b.toString(16).padStart(2, '0');
      }).join('');
    });
  }

  // SHA-256 (FIPS 180-4) for pages served over plain HTTP, where browsers withhold crypto.subtle.
  // The constants are the fractional parts of the square and cube roots of the first primes, computed here.
  var SHA256_INITIAL = [];
  var SHA256_ROUNDS = [];
  (function () {
    for (var n = 2; SHA256_ROUNDS.length < 64; n += 1) {
      var prime = true;
      for (var d = 2; d * d <= n; d += 1) if (n % d === 0) prime = false;
      if (!prime) continue;
      if (SHA256_INITIAL.length < 8) SHA256_INITIAL.push((Math.sqrt(n) % 1) * 4294967296 | 0);
      SHA256_ROUNDS.push((Math.cbrt(n) % 1) * 4294967296 | 0);
    }
  })();

  function rotate(x, n) {
    return (x >>> n) | (x << (32 - n));
  }

  function sha256Hex(buffer) {
    var bytes = new Uint8Array(buffer);
    var length = bytes.length;
    var words = new Int32Array(((length + 9 + 63) >> 6) << 4); // the message, 0x80, zeros, 64-bit bit length
    for (var i = 0; i < length; i += 1) words[i >> 2] |= bytes[i] << (24 - (i % 4) * 8);
    words[length >> 2] |= 0x80 << (24 - (length % 4) * 8);
    words[words.length - 2] = Math.floor(length / 536870912);
    words[words.length - 1] = (length * 8) | 0;
    var hash = SHA256_INITIAL.slice();
    var w = new Int32Array(64);
    for (var block = 0; block < words.length; block += 16) {
      for (var t = 0; t < 64; t += 1) {
        if (t < 16) {
          w[t] = words[block + t];
        } else {
          var s0 = rotate(w[t - 15], 7) ^ rotate(w[t - 15], 18) ^ (w[t - 15] >>> 3);
          var s1 = rotate(w[t - 2], 17) ^ rotate(w[t - 2], 19) ^ (w[t - 2] >>> 10);
          w[t] = (w[t - 16] + s0 + w[t - 7] + s1) | 0;
        }
      }
      var v = hash.slice();
      for (t = 0; t < 64; t += 1) {
        var e = v[4];
        var a = v[0];
        var t1 = (v[7] + (rotate(e, 6) ^ rotate(e, 11) ^ rotate(e, 25)) + ((e & v[5]) ^ (~e & v[6])) + SHA256_ROUNDS[t] + w[t]) | 0;
        var t2 = ((rotate(a, 2) ^ rotate(a, 13) ^ rotate(a, 22)) + ((a & v[1]) ^ (a & v[2]) ^ (v[1] & v[2]))) | 0;
        v = [(t1 + t2) | 0, a, v[1], v[2], (v[3] + t1) | 0, e, v[5], v[6]];
      }
      for (t = 0; t < 8; t += 1) hash[t] = (hash[t] + v[t]) | 0;
    }
    return hash.map(function (x) { return (x >>> 0).toString(16).padStart(8, '0'); }).join('');
  }

  /** A manifest by tag or digest: parsed, with its media type (Content-Type), digest and push time. */
  function manifest(name, reference) {
    var byDigest = reference.indexOf(':') > 0;
    var path = 'v2/' + name + '/manifests/' + reference;
    return remember(path, byDigest, function () {
      return get(path, MANIFEST_ACCEPT).then(function (found) {
        if (found === null) return null;
        var doc = parseJSON(found.bytes, path);
        var type = (found.headers.get('Content-Type') || '').split(';')[0].trim();
        var digest = found.headers.get('Docker-Content-Digest') || (byDigest ? Promise.resolve(reference) : sha256(found.bytes));
        var modified = found.headers.get('Last-Modified');
        return Promise.resolve(digest).then(function (computed) {
          return {
            doc: doc,
            text: new TextDecoder().decode(found.bytes),
            mediaType: GENERIC_TYPES.indexOf(type) >= 0 ? (doc.mediaType || type) : type,
            digest: computed,
            pushed: modified ? new Date(modified) : null,
          };
        });
      });
    });
  }

  /**
   * An image config blob: {doc}, {missing: true}, {tooLarge: true} when it is (or says it is) MAX_CONFIG_BYTES or
   * more, or {skipped: true} when it is no image config. At most MAX_CONFIG_BYTES are read, whatever its size.
   */
  function config(name, descriptor) {
    if (!descriptor || IMAGE_CONFIGS.indexOf(descriptor.mediaType) < 0) return Promise.resolve({ skipped: true });
    if (!(descriptor.size < MAX_CONFIG_BYTES)) return Promise.resolve({ tooLarge: true });
    var path = 'v2/' + name + '/blobs/' + descriptor.digest;
    return remember(path, true, function () {
      return getPrefix(path, MAX_CONFIG_BYTES).then(function (found) {
        if (found === null) return { missing: true };
        return found.whole ? { doc: parseJSON(found.bytes, path) } : { tooLarge: true };
      });
    });
  }

  function referrers(name, digest) {
    var path = 'v2/' + name + '/referrers/' + digest;
    return remember(path, false, function () {
      return get(path, OCI_INDEX).then(function (found) {
        return found === null ? [] : parseJSON(found.bytes, path).manifests || [];
      });
    });
  }

  /**
   * When the image was built: a Date; NOT_RECORDED when its config gives no time, or the zero time that reproducible
   * builds write (SOURCE_DATE_EPOCH=0: 1970-01-01); null when the config could not be read.
   */
  function createdOf(configFound) {
    var doc = configFound && configFound.doc;
    if (!doc) return null;
    var created = typeof doc.created === 'string' ? new Date(doc.created) : null;
    return created && created.getTime() > 0 ? created : NOT_RECORDED;
  }

  function createdElement(created) {
    if (created !== NOT_RECORDED) return timeElement(created);
    return h('span', { class: 'muted', title: 'The image config names no build time (reproducible builds set 1970-01-01).' },
      NOT_RECORDED);
  }

  /** What a row shows of a manifest: compressed size, platforms, created; an index sums its platforms. */
  function summary(name, found) {
    if (isIndex(found.mediaType, found.doc)) {
      var children = platformChildren(found.doc);
      return Promise.all(children.map(function (child) {
        return manifest(name, child.digest).catch(function () { return null; });
      })).then(function (manifests) {
        var present = manifests.filter(Boolean);
        var first = present[0];
        return (first ? config(name, first.doc.config) : Promise.resolve(null)).then(function (configFound) {
          return {
            size: present.length === children.length
              ? present.reduce(function (sum, m) { return sum + layersSize(m.doc); }, 0) : null,
            platforms: children.map(function (child) { return platformName(child.platform); }),
            created: createdOf(configFound),
            artifactType: found.doc.artifactType || null,
          };
        });
      });
    }
    var artifactType = artifactTypeOf(found.doc);
    return config(name, found.doc.config).then(function (configFound) {
      // An artifact's config holds no build time: nothing to say (rather than "not recorded").
      var created = artifactType ? null : createdOf(configFound);
      return { size: layersSize(found.doc), platforms: [], created: created, artifactType: artifactType, config: configFound };
    });
  }

  // ---- building the DOM (text only: nothing read from the bucket is parsed as HTML) -------------------------------

  function h(tag, props) {
    var element = document.createElement(tag);
    Object.keys(props || {}).forEach(function (key) {
      var value = props[key];
      if (value === null || value === undefined || value === false) return;
      if (key === 'class') element.className = value;
      else if (key.indexOf('on') === 0) element.addEventListener(key.slice(2), value);
      else element.setAttribute(key, value === true ? '' : String(value));
    });
    for (var i = 2; i < arguments.length; i += 1) append(element, arguments[i]);
    return element;
  }

  function append(parent, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) child.forEach(function (c) { append(parent, c); });
    else parent.append(child instanceof Node ? child : String(child));
  }

  function timeElement(date) {
    if (!(date instanceof Date) || isNaN(date.getTime())) return '—';
    return h('time', { datetime: date.toISOString() }, formatDate(date));
  }

  function digestCode(digest) {
    return h('code', { class: 'digest', title: digest }, shortDigest(digest));
  }

  function announce(message) {
    document.getElementById('status').textContent = message;
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).then(function () { return true; }, function () { return legacyCopy(text); });
    }
    return Promise.resolve(legacyCopy(text));
  }

  function legacyCopy(text) {
    var area = h('textarea', { class: 'offscreen', readonly: true, 'aria-hidden': 'true' });
    area.value = text;
    document.body.append(area);
    area.select();
    var ok = false;
    try {
      ok = document.execCommand('copy');
    } catch (e) {
      ok = false;
    }
    area.remove();
    return ok;
  }

  function copy(text, button) {
    return copyText(text).then(function (ok) {
      announce(ok ? 'Copied: ' + text : 'Copying failed; select the text and copy it.');
      if (!button) return;
      var label = button.classList.contains('copy') ? 'Copy' : null;
      button.setAttribute('data-copied', ok ? 'yes' : 'no');
      if (label !== null) button.textContent = ok ? 'Copied' : 'Failed';
      setTimeout(function () {
        button.removeAttribute('data-copied');
        if (label !== null) button.textContent = label;
      }, 1500);
    });
  }

  function copyButton(text, label) {
    return h('button', {
      type: 'button',
      class: 'copy',
      'aria-label': label || 'Copy ' + text,
      onclick: function (event) { copy(text, event.currentTarget); },
    }, 'Copy');
  }

  /** A command with its copy button: what people copy is exactly what is shown. */
  function command(label, text) {
    return h('div', { class: 'command' },
      h('span', { class: 'command-label' }, label),
      h('code', { class: 'command-text' }, text),
      copyButton(text, 'Copy: ' + text));
  }

  /** docker pulls images; an artifact (an SBOM, a signature, a chart) is pulled with oras. */
  function pullCommand(name, tag, digest, artifact) {
    return (artifact ? 'oras pull ' : 'docker pull ') + host + '/' + name + (tag ? ':' + tag : '@' + digest);
  }

  function definitionList(pairs) {
    var list = h('dl', { class: 'facts' });
    pairs.forEach(function (pair) {
      if (pair) list.append(h('dt', null, pair[0]), h('dd', null, pair[1]));
    });
    return list;
  }

  function table(caption, headers, rows, className) {
    var head = h('tr', null, headers.map(function (label) { return h('th', { scope: 'col' }, label); }));
    var body = h('tbody', null, rows.map(function (cells) {
      return h('tr', null, cells.map(function (cell, i) { return h('td', { 'data-label': headers[i] }, cell); }));
    }));
    var element = h('table', { class: 'rows ' + (className || '') }, h('caption', { class: 'visually-hidden' }, caption), h('thead', null, head), body);
    return h('div', { class: 'scroll' }, element);
  }

  function keyValueTable(caption, object) {
    var keys = Object.keys(object || {}).sort();
    if (!keys.length) return h('p', { class: 'muted' }, 'None.');
    return table(caption, ['Key', 'Value'], keys.map(function (key) { return [h('code', null, key), String(object[key])]; }), 'pairs');
  }

  /** Pretty JSON whose digests are buttons that copy them. */
  function jsonView(text) {
    var pretty;
    try {
      pretty = JSON.stringify(JSON.parse(text), null, 2);
    } catch (e) {
      pretty = text;
    }
    var pre = h('pre', { class: 'json', tabindex: '0', 'aria-label': 'Manifest JSON' });
    var last = 0;
    pretty.replace(JSON_DIGEST_RE, function (match, digest, offset) {
      pre.append(pretty.slice(last, offset + 1));
      pre.append(h('button', {
        type: 'button',
        class: 'json-digest',
        title: 'Copy ' + digest,
        onclick: function (event) { copy(digest, event.currentTarget); },
      }, digest));
      last = offset + match.length - 1;
      return match;
    });
    pre.append(pretty.slice(last));
    return pre;
  }

  // ---- a long list, rendered a page at a time, rows filled in when they scroll into view ---------------------

  /**
   * options: items, key(item) (what the filter matches), noun [singular, plural], caption, filterLabel,
   * filterPlaceholder, headers, row(item) -> {tr, fill} (fill reads the row's details once it is on screen), and to
   * sort: sortable {header: compare}, initialSort, descendingFirst {header: true}, prepareSort(header) -> Promise
   * (reads what that order needs first).
   */
  function longList(options, live) {
    var state = { query: '', shown: PAGE_SIZE, order: options.items.slice(), sortedBy: options.initialSort || null, descending: false };
    var observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        if (!entry.isIntersecting) return;
        observer.unobserve(entry.target);
        var fill = entry.target.fillRow;
        entry.target.fillRow = null;
        if (fill && live()) fill();
      });
    }, { rootMargin: '200px 0px' });
    observers.push(observer);

    var id = 'filter-' + options.noun[1].replace(/\W/g, '');
    var input = h('input', { id: id, type: 'search', autocomplete: 'off', spellcheck: 'false', placeholder: options.filterPlaceholder });
    var count = h('p', { class: 'count', 'aria-live': 'polite' });
    var body = h('tbody');
    var more = h('button', { type: 'button', class: 'more' }, 'Show more');
    var headerCells = options.headers.map(function (label) {
      var compare = options.sortable && options.sortable[label];
      if (!compare) return h('th', { scope: 'col' }, label);
      var button = h('button', { type: 'button', class: 'sort' }, label);
      var th = h('th', { scope: 'col', 'aria-sort': 'none' }, button);
      button.addEventListener('click', function () { sortBy(label, th); });
      return th;
    });
    var tableElement = h('table', { class: 'rows list' },
      h('caption', { class: 'visually-hidden' }, options.caption),
      h('thead', null, h('tr', null, headerCells)), body);

    function matching() {
      var query = state.query.toLowerCase();
      return query ? state.order.filter(function (item) { return options.key(item).toLowerCase().indexOf(query) >= 0; }) : state.order;
    }

    /** The count line and the "more" button for the rows shown so far. */
    function describe(items) {
      var total = options.items.length;
      var noun = total === 1 ? options.noun[0] : options.noun[1];
      var shown = Math.min(state.shown, items.length);
      count.textContent = state.query
        ? items.length + ' of ' + total + ' ' + noun + ' match' + (shown < items.length ? ', showing ' + shown : '')
        : total + ' ' + noun + (shown < items.length ? ', showing ' + shown : '');
      more.hidden = shown >= items.length;
      more.textContent = 'Show ' + Math.min(PAGE_SIZE, items.length - shown) + ' more';
    }

    function addRows(items, from) {
      items.slice(from, state.shown).forEach(function (item) {
        var made = options.row(item);
        made.tr.fillRow = made.fill;
        body.append(made.tr);
        if (made.fill) observer.observe(made.tr);
      });
    }

    function render() {
      var items = matching();
      body.replaceChildren();
      addRows(items, 0);
      describe(items);
    }

    function sortBy(label, th) {
      var descending = state.sortedBy === label ? !state.descending : !!options.descendingFirst && options.descendingFirst[label];
      var prepared = options.prepareSort ? options.prepareSort(label) : Promise.resolve();
      th.setAttribute('aria-busy', 'true');
      prepared.then(function () {
        if (!live()) return;
        var compare = options.sortable[label];
        state.order = options.items.slice().sort(function (a, b) { return descending ? compare(b, a) : compare(a, b); });
        state.sortedBy = label;
        state.descending = descending;
        headerCells.forEach(function (cell) { cell.setAttribute('aria-sort', 'none'); });
        th.setAttribute('aria-sort', descending ? 'descending' : 'ascending');
        th.removeAttribute('aria-busy');
        render();
        announce('Sorted by ' + label.toLowerCase() + (descending ? ', descending' : ''));
      }, function (error) {
        th.removeAttribute('aria-busy');
        announce(error.message);
      });
    }

    var timer = null;
    input.addEventListener('input', function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        state.query = input.value.trim();
        state.shown = PAGE_SIZE;
        render();
      }, 120);
    });
    more.addEventListener('click', function () {
      var items = matching();
      var from = state.shown;
      state.shown += PAGE_SIZE;
      addRows(items, from); // the rows already shown stay as they are, with the details they read
      describe(items);
    });
    if (state.sortedBy) {
      headerCells.forEach(function (cell) {
        if (cell.textContent === state.sortedBy) cell.setAttribute('aria-sort', 'ascending');
      });
    }
    render();
    return h('section', { class: 'long-list' },
      h('div', { class: 'filter' }, h('label', { for: id }, options.filterLabel), input),
      count, h('div', { class: 'scroll' }, tableElement), more);
  }

  // ---- views -------------------------------------------------------------------------------------------------

  function heading(text, kind) {
    return h('h1', { tabindex: '-1' }, kind ? h('span', { class: 'kind' }, kind) : null, text);
  }

  function catalogView(view, live) {
    document.title = 'Repositories · ' + host;
    view.append(heading('Repositories'));
    announce('Reading the catalog…');
    return listAll('v2/_catalog', 'repositories').then(function (names) {
      if (!live()) return;
      announce('');
      if (!names || names.length === 0) {
        view.append(h('div', { class: 'empty' },
          h('p', null, 'No repositories yet. Images pushed to this registry appear here, and pull from this address: ',
            h('code', null, 'docker pull ' + host + '/NAME:TAG'), '.')));
        return;
      }
      view.append(longList({
        items: names.slice().sort(),
        key: function (name) { return name; },
        noun: ['repository', 'repositories'],
        caption: 'Repositories',
        filterLabel: 'Filter repositories',
        filterPlaceholder: 'name contains…',
        headers: ['Repository', 'Tags'],
        row: repositoryRow,
      }, live));
    });
  }

  function repositoryRow(name) {
    var tags = h('td', { 'data-label': 'Tags', class: 'num' }, '…');
    var tr = h('tr', null, h('th', { scope: 'row', 'data-label': 'Repository' }, h('a', { href: link(name) }, name)), tags);
    return {
      tr: tr,
      fill: function () {
        listAll('v2/' + name + '/tags/list', 'tags').then(function (list) {
          tags.textContent = list === null ? 'no tags list' : list.length + (list.length === 1 ? ' tag' : ' tags');
        }, function (error) {
          tags.textContent = error.status ? 'HTTP ' + error.status : 'unreadable';
        });
      },
    };
  }

  function repositoryView(view, live, route) {
    var name = route.name;
    document.title = name + ' · ' + host;
    view.append(heading(name, 'Repository'));
    announce('Reading the tags…');
    return listAll('v2/' + name + '/tags/list', 'tags').then(function (tags) {
      if (!live()) return;
      announce('');
      if (tags === null) {
        view.append(h('p', { class: 'notice' }, 'This repository has no tags list (v2/' + name + '/tags/list is absent): ' +
          'nothing was pushed under this name, or the list was lost (storj-registry fsck --repair rebuilds it).'));
        return;
      }
      if (tags.length === 0) {
        view.append(h('p', { class: 'notice' }, 'No tags: every manifest here is reachable by digest only.'));
        return;
      }
      var sorted = tags.slice().sort(naturalCompare);
      var suggested = tags.indexOf('latest') >= 0 ? 'latest' : sorted[sorted.length - 1];
      var pull = h('div', null, command('Pull', pullCommand(name, suggested)));
      view.append(pull);
      manifest(name, suggested).then(function (found) { return found && summary(name, found); }).then(function (info) {
        if (info && info.artifactType) pull.replaceChildren(command('Pull', pullCommand(name, suggested, null, true)));
      }).catch(function () {}); // the tag's row shows what went wrong
      var pushed = {};
      view.append(longList({
        items: sorted,
        key: function (tag) { return tag; },
        noun: ['tag', 'tags'],
        caption: 'Tags of ' + name,
        filterLabel: 'Filter tags',
        filterPlaceholder: 'tag contains…',
        headers: ['Tag', 'Digest', 'Type', 'Size', 'Platforms', 'Created', 'Pushed'],
        sortable: {
          Tag: naturalCompare,
          Pushed: function (a, b) { return (pushed[a] || 0) - (pushed[b] || 0) || naturalCompare(a, b); },
        },
        initialSort: 'Tag',
        descendingFirst: { Pushed: true },
        prepareSort: function (label) {
          if (label !== 'Pushed') return Promise.resolve();
          var done = 0;
          return Promise.all(tags.map(function (tag) {
            return manifest(name, tag).catch(function () { return null; }).then(function (found) {
              pushed[tag] = found && found.pushed ? found.pushed.getTime() : 0;
              done += 1;
              if (done % 50 === 0 && live()) announce('Reading push times: ' + done + ' of ' + tags.length);
            });
          }));
        },
        row: function (tag) { return tagRow(name, tag); },
      }, live));
    });
  }

  function tagRow(name, tag) {
    var cells = {};
    var labels = ['Digest', 'Type', 'Size', 'Platforms', 'Created', 'Pushed'];
    var tr = h('tr', null, h('th', { scope: 'row', 'data-label': 'Tag' }, h('a', { href: link(name, tag) }, tag)),
      labels.map(function (label) {
        cells[label] = h('td', { 'data-label': label, class: label === 'Size' ? 'num' : null }, '…');
        return cells[label];
      }));
    function set(label, content) {
      cells[label].replaceChildren();
      append(cells[label], content);
    }
    return {
      tr: tr,
      fill: function () {
        manifest(name, tag).then(function (found) {
          if (found === null) {
            labels.forEach(function (label) { set(label, '—'); });
            set('Digest', h('span', { class: 'warn' }, 'manifest missing'));
            return null;
          }
          set('Digest', found.digest ? digestCode(found.digest) : '—');
          set('Type', h('span', { title: found.mediaType }, shortType(found.mediaType)));
          set('Pushed', timeElement(found.pushed));
          return summary(name, found).then(function (info) {
            if (info.artifactType) set('Type', h('span', { title: found.mediaType }, 'Artifact: ' + info.artifactType));
            set('Size', formatSize(info.size));
            set('Platforms', info.platforms.length ? info.platforms.join(', ') : '—');
            set('Created', createdElement(info.created));
          });
        }).catch(function (error) {
          set('Digest', h('span', { class: 'warn' }, error.message));
        });
      },
    };
  }

  function manifestView(view, live, route) {
    var name = route.name;
    var reference = route.tag || route.digest;
    var title = route.tag ? name + ':' + route.tag : name + '@' + shortDigest(route.digest);
    document.title = title + ' · ' + host;
    view.append(heading(title, route.tag ? 'Tag' : 'Manifest'));
    announce('Reading the manifest…');
    return manifest(name, reference).then(function (found) {
      if (!live()) return null;
      if (found === null) {
        announce('');
        view.append(h('p', { class: 'notice' }, 'No manifest ' + name + (route.tag ? ':' : '@') + reference + ' in this registry.'));
        return null;
      }
      var digest = found.digest || route.digest;
      var pulls = h('section', { class: 'pull', 'aria-label': 'Pull commands' });
      view.append(pulls);
      return summary(name, found).then(function (info) {
        if (!live()) return null;
        announce('');
        var artifact = !!info.artifactType;
        if (route.tag) pulls.append(command('By tag', pullCommand(name, route.tag, null, artifact)));
        if (digest) pulls.append(command('By digest', pullCommand(name, null, digest, artifact)));
        view.append(definitionList([
          ['Digest', digest ? [h('code', { class: 'digest-full' }, digest), ' ', copyButton(digest, 'Copy digest ' + digest)] : 'unknown (needs HTTPS to compute)'],
          ['Media type', h('code', null, found.mediaType || '—')],
          info.artifactType ? ['Artifact type', h('code', null, info.artifactType)] : null,
          ['Compressed size', formatSize(info.size)],
          info.platforms.length ? ['Platforms', info.platforms.join(', ')] : null,
          ['Created', createdElement(info.created)],
          [route.tag ? 'Pushed' : 'Stored', timeElement(found.pushed)],
        ]));
        if (isIndex(found.mediaType, found.doc)) view.append(platformsSection(name, found.doc));
        else view.append(layersSection(found.doc), configSection(found.doc, info.config));
        view.append(section('Annotations', keyValueTable('Annotations', found.doc.annotations)));
        var refs = h('div', null, h('p', { class: 'muted' }, 'Reading referrers…'));
        view.append(section('Referrers', refs));
        view.append(section('Manifest', jsonView(found.text)));
        return digest ? referrersInto(refs, name, digest, live) : null;
      });
    });
  }

  function section(title, content) {
    var id = 'section-' + title.toLowerCase().replace(/\W+/g, '-');
    return h('section', { 'aria-labelledby': id }, h('h2', { id: id }, title), content);
  }

  function platformsSection(name, doc) {
    var rows = (doc.manifests || []).map(function (child) {
      var size = h('span', null, '…');
      manifest(name, child.digest).then(function (found) {
        size.textContent = found ? formatSize(layersSize(found.doc)) : 'manifest missing';
      }, function () { size.textContent = 'unreadable'; });
      var annotations = child.annotations || {};
      var label = annotations['vnd.docker.reference.type'] === 'attestation-manifest' ? 'attestation' : platformName(child.platform);
      return [h('a', { href: link(name, child.digest) }, label), digestCode(child.digest), shortType(child.mediaType), size];
    });
    return section('Platforms', table('Platforms', ['Platform', 'Digest', 'Type', 'Size'], rows));
  }

  function layersSection(doc) {
    var layers = doc.layers || [];
    if (!layers.length) return section('Layers', h('p', { class: 'muted' }, 'No layers (an artifact described by its manifest alone).'));
    var rows = layers.map(function (layer, i) {
      return [String(i + 1), [digestCode(layer.digest), ' ', copyButton(layer.digest, 'Copy digest of layer ' + (i + 1))],
        h('span', { title: layer.mediaType }, layer.mediaType || '—'), formatSize(layer.size)];
    });
    var total = h('p', { class: 'muted' }, layers.length + (layers.length === 1 ? ' layer, ' : ' layers, ') + formatSize(layersSize(doc)) + ' compressed');
    return section('Layers', [total, table('Layers', ['#', 'Digest', 'Media type', 'Size'], rows)]);
  }

  function configSection(doc, configFound) {
    var descriptor = doc.config || {};
    if (!configFound || configFound.skipped) {
      return section('Config', definitionList([
        ['Media type', h('code', null, descriptor.mediaType || '—')],
        ['Size', formatSize(descriptor.size)],
      ]));
    }
    if (configFound.missing) {
      return section('Config', h('p', { class: 'warn' }, 'The config blob ' + descriptor.digest + ' is missing from the registry.'));
    }
    if (configFound.tooLarge) {
      return section('Config', [
        h('p', { class: 'warn' }, 'The config blob is too large to show here (the page reads at most ' + formatSize(MAX_CONFIG_BYTES) + ' of it).'),
        definitionList([['Media type', h('code', null, descriptor.mediaType || '—')], ['Declared size', formatSize(descriptor.size)]]),
      ]);
    }
    var cfg = configFound.doc;
    var inner = cfg.config || {};
    return section('Config', [
      definitionList([
        ['Platform', platformName(cfg)],
        inner.Entrypoint ? ['Entrypoint', h('code', null, JSON.stringify(inner.Entrypoint))] : null,
        inner.Cmd ? ['Command', h('code', null, JSON.stringify(inner.Cmd))] : null,
        inner.User ? ['User', inner.User] : null,
      ]),
      h('h3', null, 'Labels'),
      keyValueTable('Labels', inner.Labels),
    ]);
  }

  function referrersInto(container, name, digest, live) {
    return referrers(name, digest).then(function (list) {
      if (!live()) return;
      container.replaceChildren();
      if (!list.length) {
        container.append(h('p', { class: 'muted' }, 'No referrers (signatures, SBOMs, attestations) name this manifest.'));
        return;
      }
      container.append(table('Referrers', ['Artifact type', 'Digest', 'Size', 'Created'], list.map(function (ref) {
        var created = (ref.annotations || {})['org.opencontainers.image.created'];
        return [h('code', null, ref.artifactType || shortType(ref.mediaType)),
          h('a', { href: link(name, ref.digest) }, shortDigest(ref.digest)),
          formatSize(ref.size), created ? timeElement(new Date(created)) : '—'];
      })));
    }, function (error) {
      container.replaceChildren(h('p', { class: 'warn' }, error.message));
    });
  }

  // ---- routing -----------------------------------------------------------------------------------------------

  function crumbs(route) {
    var list = document.getElementById('crumbs');
    var items = [['Repositories', '#/']];
    if (route.name) items.push([route.name, link(route.name)]);
    if (route.tag) items.push([':' + route.tag, link(route.name, route.tag)]);
    if (route.digest) items.push(['@' + shortDigest(route.digest), link(route.name, route.digest)]);
    list.replaceChildren.apply(list, items.map(function (item, i) {
      var last = i === items.length - 1;
      return h('li', null, h('a', { href: item[1], 'aria-current': last ? 'page' : null }, item[0]));
    }));
  }

  function show(focus) {
    var route = parseRoute(location.hash);
    if (route === null) return; // an in-page anchor such as the skip link
    generation += 1;
    var mine = generation;
    var live = function () { return mine === generation; };
    observers.forEach(function (o) { o.disconnect(); });
    observers = [];
    fresh.clear();
    var view = document.getElementById('view');
    view.replaceChildren();
    view.setAttribute('aria-busy', 'true');
    announce('');
    crumbs(route);
    var views = { catalog: catalogView, repository: repositoryView, manifest: manifestView };
    var done;
    if (route.view === 'invalid') {
      view.append(heading('Not found'), h('p', { class: 'notice' }, '“' + route.text + '” is not a repository, tag or digest.'));
      done = Promise.resolve();
    } else {
      try {
        done = Promise.resolve(views[route.view](view, live, route));
      } catch (error) {
        done = Promise.reject(error);
      }
    }
    if (focus && view.querySelector('h1')) view.querySelector('h1').focus();
    done.catch(function (error) {
      if (!live()) return;
      announce('');
      view.append(h('p', { class: 'error', role: 'alert' }, error.message || String(error)));
    }).then(function () {
      if (live()) view.setAttribute('aria-busy', 'false');
    });
  }

  function start() {
    document.getElementById('host').textContent = host;
    var generator = document.querySelector('meta[name="generator"]');
    if (generator) document.getElementById('generator').textContent = generator.content;
    window.addEventListener('hashchange', function () { show(true); });
    show(false);
  }

  window.RegistryPage = {
    parseRoute: parseRoute,
    link: link,
    formatSize: formatSize,
    formatDate: formatDate,
    shortDigest: shortDigest,
    platformChildren: platformChildren,
    artifactTypeOf: artifactTypeOf,
    sha256Hex: sha256Hex,
  };

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
