/*
 * The readers' shortcut in C: PolicyEngine.verdict's common case, three lookups.
 *
 * It does what the Python shortcut at the top of PolicyEngine.verdict does, in the same order
 * and on the same published objects: the sender's egress program, the destination's identity
 * (resolving an address in canonical IPv4 text met for the first time as Python does), and
 * the verdict the program keeps for it (in the slice of the flow's protocol and port: under
 * its family for a peer in none of the slice's sets, else under its view), then, for an
 * endpoint's address, the receiver's. Whatever it
 * cannot answer (a flow with keywords, a source port or an ICMP field, other text met for the
 * first time, a verdict not yet kept, a change in progress) goes to the Python method,
 * unchanged, with the same arguments. So it never decides anything the Python code would not:
 * it saves the interpreter's dispatch, and reads as little memory as it can, on the path a
 * datapath calls per flow.
 *
 * It runs holding the GIL and calls no Python code of its own; a caller's object with a
 * Python __hash__ could let a writer run midway, so it holds references to what it reads and
 * checks at the end that the snapshot it started from is still published, as the Python code
 * does. The most common case (kept_plain) has no such object to meet: it reads without
 * references, since nothing can run between its first read and its answer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

static PyObject *str_egress_attr;   /* "egress" (Snapshot.egress) */
static PyObject *str_prefixes;      /* "prefixes" */
static PyObject *str_outside;       /* "outside" */
static PyObject *str_refs;          /* "refs" (Slice.refs) */
static PyObject *str_family;        /* "family" */
static PyObject *str_ports;         /* "ports" */
static PyObject *str_bits;          /* "bits" (Identity.bits) */
static PyObject *str_bit1;          /* "bit1" (Identity.bit1) */
static PyObject *str_bit2;          /* "bit2" (Identity.bit2) */
static PyObject *str_mask;          /* "mask" (Slice.mask) */
static PyObject *str_peer_named;    /* "peer_named" (Slice.peer_named) */
static PyObject *str_peer_ports;    /* "peer_ports" (Slice.peer_ports) */
static PyObject *str_action;        /* "action" (Verdict.action) */
static PyObject *str_ip4;           /* "ip4" (EndpointRecord.ip4) */
static PyObject *str_ip6;           /* "ip6" */
static PyObject *str_ingress;       /* "ingress" (EndpointRecord.ingress) */
static PyObject *str_trees;         /* "trees" (PrefixTable.trees) */
static PyObject *str_world;         /* "_world" (PrefixTable._world) */
static PyObject *str_get;           /* "get" */
static PyObject *str_asked;         /* "asked" (Slice.asked) */
static PyObject *str_blocks;        /* "blocks" (Program.blocks) */
static PyObject *str_fallback;      /* "fallback" (Program.fallback) */
static PyObject *str_v4;            /* "v4" (Slice.v4) */
static PyObject *str_v6;            /* "v6" */
static PyObject *int_four;          /* 4, the family key of both */
static PyObject *int_six;           /* 6 */

static PyObject *str_egress_value;  /* the direction "egress" */

/* identities.SIGNATURE_BITS, as a bitmap's length in bytes. */
#define MASK_BYTES 512

typedef struct {
    PyObject_HEAD
    PyObject *snapshot;   /* the published Snapshot, kept equal to PolicyEngine._snapshot */
    PyObject *hosts;      /* the published hosts dict (the same object for the engine's life) */
    PyObject *records;    /* the published endpoint records by key (likewise) */
    PyObject *owners;     /* the published endpoint records by address (likewise) */
    PyObject *general;    /* the Python verdict, bound: everything else goes there */
    Py_ssize_t outside_limit;  /* identities.OUTSIDE_LIMIT */
    vectorcallfunc vectorcall;
} Shortcut;

/* Where a type keeps one __slots__ attribute, found once per type: reading it is then one
 * load instead of a generic attribute lookup. The type is held, so its address stays its. */
typedef struct {
    PyTypeObject *type;
    Py_ssize_t offset;
} Slot;

static Slot slot_egress, slot_prefixes, slot_outside, slot_refs, slot_family, slot_ports;
static Slot slot_bits, slot_bit1, slot_bit2, slot_mask, slot_peer_named, slot_peer_ports;
static Slot slot_action;
static Slot slot_ip4, slot_ip6, slot_ingress;
static Slot slot_trees, slot_world, slot_v4, slot_v6, slot_asked, slot_blocks, slot_fallback;

/* ``obj``'s slot ``name``, borrowed; NULL (no error set) when it has no such slot or it is
 * unset. */
static PyObject *
slot_get(Slot *slot, PyObject *obj, PyObject *name)
{
    PyTypeObject *type = Py_TYPE(obj);
    if (type != slot->type) {
        PyObject *descr = _PyType_Lookup(type, name);
        if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
            return NULL;
        }
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type != T_OBJECT_EX || (member->flags & READONLY)) {
            return NULL;
        }
        Py_INCREF(type);
        Py_XSETREF(slot->type, type);
        slot->offset = member->offset;
    }
    return *(PyObject **)((char *)obj + slot->offset);
}

/* Whether sets ``a`` and ``b`` share no element (iterating the smaller). */
static int
disjoint(PyObject *a, PyObject *b)
{
    if (PySet_GET_SIZE(a) > PySet_GET_SIZE(b)) {
        PyObject *t = a;
        a = b;
        b = t;
    }
    Py_ssize_t pos = 0;
    PyObject *item;
    Py_hash_t hash;
    while (_PySet_NextEntry(a, &pos, &item, &hash)) {
        int found = PySet_Contains(b, item);
        if (found != 0) {
            return found < 0 ? -1 : 0;
        }
    }
    return 1;
}

/* Whether peer ``ident`` is in none of slice ``part``'s sets: 1 yes, 0 no, -1 error. The
 * folded bits answer most peers without reading either set; a bit also set in the slice's mask
 * proves nothing (other set numbers fold onto it too), and then the sets answer. An identity
 * holds up to three bits in its own fields (Identity.bits, bit1, bit2), else all of them as a
 * tuple in ``bits``; None where it has none. */
static int
plain(PyObject *ident, PyObject *part)
{
    PyObject *bits = slot_get(&slot_bits, ident, str_bits);
    PyObject *mask = slot_get(&slot_mask, part, str_mask);
    if (bits != NULL && mask != NULL && PyBytes_CheckExact(mask)
        && PyBytes_GET_SIZE(mask) == MASK_BYTES) {
        const unsigned char *m = (const unsigned char *)PyBytes_AS_STRING(mask);
        PyObject *held[3];
        PyObject *const *items = held;
        Py_ssize_t n = 0;
        if (PyTuple_CheckExact(bits)) {
            items = &PyTuple_GET_ITEM(bits, 0);
            n = PyTuple_GET_SIZE(bits);
        }
        else if (bits != Py_None) {
            PyObject *bit1 = slot_get(&slot_bit1, ident, str_bit1);
            PyObject *bit2 = slot_get(&slot_bit2, ident, str_bit2);
            held[n++] = bits;
            if (bit1 != Py_None) {
                held[n++] = bit1;  /* NULL (unreadable) fails the test below */
                if (bit2 != Py_None) {
                    held[n++] = bit2;
                }
            }
        }
        Py_ssize_t i = 0;
        for (; i < n; i++) {
            long bit = items[i] != NULL && PyLong_CheckExact(items[i]) ? PyLong_AsLong(items[i])
                                                                       : -1;
            if (bit < 0 || bit >= MASK_BYTES * 8 || (m[bit >> 3] & (1 << (bit & 7)))) {
                break;
            }
        }
        if (i == n) {
            return 1;
        }
        PyErr_Clear();
    }
    PyObject *refs = slot_get(&slot_refs, part, str_refs);
    if (refs == NULL || !PyFrozenSet_CheckExact(refs)) {
        return -1;
    }
    return disjoint(ident, refs);
}

/* What of peer ``ident`` slice ``part``'s verdicts depend on, as Slice.view builds it: its
 * family, the slice's sets holding it, and its endpoint's ports where a rule reads them; a
 * new reference, or NULL when it cannot be built here. */
static PyObject *
view_of(PyObject *part, PyObject *ident)
{
    PyObject *refs = slot_get(&slot_refs, part, str_refs);
    PyObject *peer_ports = slot_get(&slot_peer_ports, part, str_peer_ports);
    PyObject *family = slot_get(&slot_family, ident, str_family);
    PyObject *ports = slot_get(&slot_ports, ident, str_ports);
    if (refs == NULL || !PyFrozenSet_CheckExact(refs) || family == NULL || ports == NULL
        || (peer_ports != Py_True && peer_ports != Py_False)) {
        return NULL;
    }
    PyObject *common = PyNumber_And(ident, refs);
    if (common == NULL) {
        return NULL;
    }
    PyObject *view = PyTuple_Pack(3, family, common, peer_ports == Py_True ? ports : Py_None);
    Py_DECREF(common);
    return view;
}

/* The verdict slice ``part`` keeps for every peer of ``ident``'s family in none of its sets,
 * borrowed; NULL (no error set) when none is kept yet. */
static PyObject *
family_verdict(PyObject *part, PyObject *ident)
{
    PyObject *family = slot_get(&slot_family, ident, str_family);
    PyObject *found = family == int_four  ? slot_get(&slot_v4, part, str_v4)
                      : family == int_six ? slot_get(&slot_v6, part, str_v6)
                                          : NULL;
    return found == Py_None ? NULL : found;
}

/* The verdict slice ``part`` keeps for peer ``ident``: the one for its family when the peer is
 * judged like any address in none of the slice's sets (Slice.plain), else the one under its
 * view; a new reference, or NULL (no error set) when none is kept. */
static PyObject *
kept_in(PyObject *part, PyObject *ident)
{
    int is_plain = plain(ident, part);
    if (is_plain < 0) {
        return NULL;
    }
    PyObject *ports = slot_get(&slot_ports, ident, str_ports);
    if (ports == NULL) {
        return NULL;
    }
    if (is_plain && ports != Py_None) {
        /* An endpoint's ports tell peers apart where a rule reads named ports on any peer. */
        PyObject *named = slot_get(&slot_peer_named, part, str_peer_named);
        if (named != Py_True && named != Py_False) {
            return NULL;
        }
        is_plain = named == Py_False;
    }
    if (is_plain) {
        return Py_XNewRef(family_verdict(part, ident));
    }
    PyObject *view = view_of(part, ident);
    if (view == NULL) {
        return NULL;
    }
    PyObject *found = PyDict_GetItemWithError(part, view);
    Py_XINCREF(found);
    Py_DECREF(view);
    return found;
}

/* The slice ``program`` keeps for simple flows of ``protocol`` to (an exact int) ``port``, as
 * KeptVerdicts.simple files it: under the port for the protocol first asked with it, else
 * under (protocol, port); a new reference, or NULL (no error set) when there is none. */
static PyObject *
slice_of(PyObject *program, PyObject *protocol, PyObject *port)
{
    /* Looking up an exact int runs no Python code. */
    PyObject *part = PyDict_GetItemWithError(program, port);
    if (part == NULL || !PyDict_Check(part)) {
        return NULL;
    }
    /* Held: comparing or hashing a caller's protocol may let a reader clear the program. */
    Py_INCREF(part);
    PyObject *asked = slot_get(&slot_asked, part, str_asked);
    int same = asked == NULL ? -1 : PyObject_RichCompareBool(asked, protocol, Py_EQ);
    if (same == 1) {
        return part;
    }
    Py_DECREF(part);
    if (same < 0) {
        return NULL;
    }
    PyObject *key = PyTuple_Pack(2, protocol, port);
    if (key == NULL) {
        return NULL;
    }
    part = PyDict_GetItemWithError(program, key);
    Py_DECREF(key);
    if (part == NULL || !PyDict_Check(part)) {
        return NULL;
    }
    return Py_NewRef(part);
}

/* The verdict ``program`` keeps for a simple flow to peer ``ident`` in its slice for the
 * protocol and port, if any; a new reference, or NULL (no error set) when none is kept. */
static PyObject *
kept_for(PyObject *program, PyObject *ident, PyObject *protocol, PyObject *port)
{
    PyObject *part = slice_of(program, protocol, port);
    if (part == NULL) {
        return NULL;
    }
    PyObject *found = kept_in(part, ident);
    Py_DECREF(part);
    return found;
}

/* Whether ``verdict`` (a Verdict) allows: 1, 0, or -1 when it cannot be read. */
static int
allows(PyObject *verdict)
{
    PyObject *action = slot_get(&slot_action, verdict, str_action);
    if (action == NULL || !PyUnicode_Check(action)) {
        return -1;
    }
    return PyUnicode_CompareWithASCIIString(action, "Allow") == 0;
}

/* Whether ``program`` has no tier at all and allows (no policy applies to its endpoint):
 * 1 yes, 0 no, -1 when it cannot be read. */
static int
admits_all(PyObject *program)
{
    PyObject *blocks = slot_get(&slot_blocks, program, str_blocks);
    PyObject *fallback = slot_get(&slot_fallback, program, str_fallback);
    if (blocks == NULL || !PyTuple_CheckExact(blocks) || fallback == NULL) {
        return -1;
    }
    return PyTuple_GET_SIZE(blocks) == 0 ? allows(fallback) : 0;
}

/* The kept verdicts of a flow to an endpoint's address ``dst``: the sender's egress, then the
 * receiver's ingress for the sender's address of the same family, as the Python method
 * reads them; a new reference, or NULL (no error set) where it would judge. */
static PyObject *
kept_to_endpoint(Shortcut *self, PyObject *program, PyObject *ident, PyObject *src,
                 PyObject *dst, PyObject *protocol, PyObject *port)
{
    PyObject *egress = kept_for(program, ident, protocol, port);
    if (egress == NULL) {
        return NULL;
    }
    int allowed = allows(egress);
    if (allowed == 0) {
        return egress;
    }
    PyObject *found = NULL, *peer = NULL, *receiver = NULL, *record = NULL;
    PyObject *owner = allowed < 0 ? NULL : PyDict_GetItemWithError(self->owners, dst);
    Py_XINCREF(owner);  /* hashing src may let a writer replace it */
    if (owner == NULL) {
        goto fail;
    }
    receiver = slot_get(&slot_ingress, owner, str_ingress);
    if (receiver == NULL || !PyDict_Check(receiver)) {
        goto fail;
    }
    if (admits_all(receiver) == 1) {
        /* No policy applies to the receiver: whoever sends (from whichever address), its
         * ingress allows. */
        Py_DECREF(owner);
        return egress;
    }
    record = PyDict_GetItemWithError(self->records, src);
    Py_XINCREF(record);
    PyObject *family = slot_get(&slot_family, ident, str_family);
    if (record == NULL || family == NULL || !PyLong_CheckExact(family)) {
        goto fail;
    }
    PyObject *address = PyLong_AsLong(family) == 6 ? slot_get(&slot_ip6, record, str_ip6)
                                                    : slot_get(&slot_ip4, record, str_ip4);
    if (address == NULL || address == Py_None) {
        goto fail;
    }
    peer = PyDict_GetItemWithError(self->hosts, address);
    if (peer == NULL || !PyFrozenSet_Check(peer)) {
        goto fail;
    }
    Py_INCREF(receiver);
    Py_INCREF(peer);
    found = kept_for(receiver, peer, protocol, port);
    Py_DECREF(peer);
    Py_DECREF(receiver);
    if (found == NULL) {
        goto fail;
    }
    Py_DECREF(owner);
    Py_DECREF(record);
    allowed = allows(found);
    if (allowed == 1) {
        Py_DECREF(found);
        return egress;
    }
    Py_DECREF(egress);
    if (allowed == 0) {
        return found;
    }
    Py_DECREF(found);
    return NULL;
fail:
    Py_XDECREF(owner);
    Py_XDECREF(record);
    Py_DECREF(egress);
    return NULL;
}

/* Whether ``text`` is an IPv4 address in canonical dotted-quad form (no leading zeros), as
 * identities.CANONICAL_IPV4 matches it; anything else is the Python method's. */
static int
canonical_ipv4(PyObject *text)
{
    if (!PyUnicode_CheckExact(text) || !PyUnicode_IS_ASCII(text)) {
        return 0;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    const char *c = (const char *)PyUnicode_DATA(text);
    Py_ssize_t i = 0;
    for (int octet = 0; octet < 4; octet++) {
        if (octet > 0) {
            if (i >= n || c[i] != '.') {
                return 0;
            }
            i++;
        }
        Py_ssize_t first = i;
        int value = 0;
        while (i < n && c[i] >= '0' && c[i] <= '9' && i - first < 3) {
            value = value * 10 + (c[i] - '0');
            i++;
        }
        Py_ssize_t digits = i - first;
        if (digits == 0 || value > 255 || (digits > 1 && c[first] == '0')) {
            return 0;
        }
    }
    return i == n;
}

/* The identity of an IPv4 address met for the first time, borrowed from the outside cache
 * it is put in, as identities.remember_outside does; NULL (no error set) if not found. */
static PyObject *
first_sighting(Shortcut *self, PyObject *prefixes, PyObject *outside, PyObject *dst)
{
    if (!canonical_ipv4(dst)) {
        return NULL;
    }
    PyObject *trees = slot_get(&slot_trees, prefixes, str_trees);
    PyObject *world = slot_get(&slot_world, prefixes, str_world);
    if (trees == NULL || world == NULL || !PyDict_CheckExact(trees)
        || !PyDict_CheckExact(world)) {
        return NULL;
    }
    PyObject *tree = PyDict_GetItemWithError(trees, int_four);
    if (tree == NULL) {
        return NULL;
    }
    PyObject *found = PyObject_CallMethodOneArg(tree, str_get, dst);
    if (found == NULL) {
        return NULL;
    }
    if (found == Py_None) {
        Py_DECREF(found);
        found = Py_XNewRef(PyDict_GetItemWithError(world, int_four));
    }
    if (found == NULL || !PyFrozenSet_Check(found)) {
        Py_XDECREF(found);
        return NULL;
    }
    if (PyDict_GET_SIZE(outside) >= self->outside_limit) {
        PyDict_Clear(outside);
    }
    int stored = PyDict_SetItem(outside, dst, found);
    Py_DECREF(found);  /* the cache holds it now */
    return stored < 0 ? NULL : found;
}

/* The kept verdict of the most common case, read without taking a reference: a flow to an
 * address no endpoint owns, whose identity the hosts table holds and which the slice judges
 * like any address of its family in none of its sets. Only for exact str endpoint and address,
 * a protocol that is an exact str or int and an exact int port: comparing and hashing those
 * runs no Python code, and nothing read here is allocated, so no other thread runs and nothing
 * read is freed before the verdict is returned (a new reference). Anything else, and any step
 * that could allocate (a view, an address met for the first time, the receiver's side), is
 * left to kept(): UNSURE. */
static PyObject unsure_object;
#define UNSURE (&unsure_object)

static PyObject *
kept_plain(Shortcut *self, PyObject *src, PyObject *dst, PyObject *protocol, PyObject *port)
{
    PyObject *egress = slot_get(&slot_egress, self->snapshot, str_egress_attr);
    if (egress == NULL || !PyDict_CheckExact(egress)) {
        return UNSURE;
    }
    PyObject *program = PyDict_GetItemWithError(egress, src);
    if (program == NULL || !PyDict_Check(program)) {
        return UNSURE;
    }
    PyObject *ident = PyDict_GetItemWithError(self->hosts, dst);
    if (ident == NULL || !PyFrozenSet_Check(ident)
        || slot_get(&slot_ports, ident, str_ports) != Py_None) {
        return UNSURE;
    }
    PyObject *part = PyDict_GetItemWithError(program, port);
    if (part == NULL || !PyDict_Check(part)) {
        return UNSURE;
    }
    PyObject *asked = slot_get(&slot_asked, part, str_asked);
    if (asked != protocol) {
        /* Kept protocols are exact str or int (or a tuple of an int): comparing runs no
         * Python code either. */
        if (asked == NULL || PyObject_RichCompareBool(asked, protocol, Py_EQ) != 1) {
            return UNSURE;
        }
    }
    if (plain(ident, part) != 1) {
        return UNSURE;
    }
    PyObject *found = family_verdict(part, ident);
    return found == NULL ? UNSURE : Py_NewRef(found);
}

/* The kept verdict of the common case, a new reference; NULL (no error set) when there is
 * none to serve. */
static PyObject *
kept(Shortcut *self, PyObject *snapshot, PyObject *src, PyObject *dst, PyObject *protocol,
     PyObject *port)
{
    PyObject *result = NULL, *program = NULL, *ident = NULL;

    PyObject *egress = slot_get(&slot_egress, snapshot, str_egress_attr);
    if (egress == NULL || !PyDict_CheckExact(egress)) {
        goto done;
    }
    program = PyDict_GetItemWithError(egress, src);
    if (program == NULL || !PyDict_Check(program)) {
        program = NULL;
        goto done;
    }
    Py_INCREF(program);  /* a caller's __hash__ below may let a writer replace it */
    ident = PyDict_GetItemWithError(self->hosts, dst);
    if (ident == NULL && !PyErr_Occurred()) {
        PyObject *prefixes = slot_get(&slot_prefixes, snapshot, str_prefixes);
        PyObject *outside = prefixes ? slot_get(&slot_outside, prefixes, str_outside) : NULL;
        if (outside != NULL && PyDict_CheckExact(outside)) {
            ident = PyDict_GetItemWithError(outside, dst);
            if (ident == NULL && !PyErr_Occurred()) {
                ident = first_sighting(self, prefixes, outside, dst);
            }
        }
    }
    if (ident == NULL || !PyFrozenSet_Check(ident)) {
        ident = NULL;
        goto done;
    }
    Py_INCREF(ident);
    PyObject *ports = slot_get(&slot_ports, ident, str_ports);
    if (ports == Py_None) {
        result = kept_for(program, ident, protocol, port);
    }
    else if (ports != NULL) {
        result = kept_to_endpoint(self, program, ident, src, dst, protocol, port);
    }
done:
    Py_XDECREF(ident);
    Py_XDECREF(program);
    /* Any error here (an unhashable endpoint object, say) is the Python method's to raise. */
    PyErr_Clear();
    return result;
}

static PyObject *
shortcut_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Shortcut *self = (Shortcut *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    /* Without a port (fewer than four arguments) no verdict is kept: the Python method. */
    if (kwnames == NULL && nargs >= 4 && nargs <= 8) {
        PyObject *protocol = args[2], *port = args[3];
        int common = 1;
        if (nargs > 4 && args[4] != str_egress_value) {
            common = PyUnicode_CheckExact(args[4])
                     && PyUnicode_Compare(args[4], str_egress_value) == 0;
        }
        for (Py_ssize_t i = 5; i < nargs; i++) {
            common = common && args[i] == Py_None;  /* src_port, icmp_type, icmp_code */
        }
        /* Served only for a plain int port and a protocol that is no bool: True and 443.0
         * hash like 1 and 443 but are refused by the Python method. */
        if (common && PyLong_CheckExact(port) && !PyBool_Check(protocol)) {
            if (PyUnicode_CheckExact(args[0]) && PyUnicode_CheckExact(args[1])
                && (PyUnicode_CheckExact(protocol) || PyLong_CheckExact(protocol))) {
                PyObject *found = kept_plain(self, args[0], args[1], protocol, port);
                PyErr_Clear();
                if (found != UNSURE) {
                    return found;
                }
            }
            PyObject *snapshot = Py_NewRef(self->snapshot);
            PyObject *found = kept(self, snapshot, args[0], args[1], protocol, port);
            int same = self->snapshot == snapshot;
            Py_DECREF(snapshot);
            if (found != NULL) {
                if (same) {
                    return found;
                }
                Py_DECREF(found);
            }
        }
    }
    return PyObject_Vectorcall(self->general, args, nargsf, kwnames);
}

static PyObject *
shortcut_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *snapshot, *hosts, *records, *owners, *general;
    Py_ssize_t outside_limit;
    static char *names[] = {"snapshot", "hosts", "records", "owners", "general",
                            "outside_limit", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO!O!O!On:Shortcut", names, &snapshot,
                                     &PyDict_Type, &hosts, &PyDict_Type, &records,
                                     &PyDict_Type, &owners, &general, &outside_limit)) {
        return NULL;
    }
    if (!PyCallable_Check(general)) {
        PyErr_SetString(PyExc_TypeError, "general must be callable");
        return NULL;
    }
    Shortcut *self = (Shortcut *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->snapshot = Py_NewRef(snapshot);
    self->hosts = Py_NewRef(hosts);
    self->records = Py_NewRef(records);
    self->owners = Py_NewRef(owners);
    self->general = Py_NewRef(general);
    self->outside_limit = outside_limit;
    self->vectorcall = shortcut_vectorcall;
    return (PyObject *)self;
}

static int
shortcut_traverse(Shortcut *self, visitproc visit, void *arg)
{
    Py_VISIT(self->snapshot);
    Py_VISIT(self->hosts);
    Py_VISIT(self->records);
    Py_VISIT(self->owners);
    Py_VISIT(self->general);
    return 0;
}

static int
shortcut_clear(Shortcut *self)
{
    Py_CLEAR(self->snapshot);
    Py_CLEAR(self->hosts);
    Py_CLEAR(self->records);
    Py_CLEAR(self->owners);
    Py_CLEAR(self->general);
    return 0;
}

static void
shortcut_dealloc(Shortcut *self)
{
    PyObject_GC_UnTrack(self);
    shortcut_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
shortcut_publish(Shortcut *self, PyObject *snapshot)
{
    Py_SETREF(self->snapshot, Py_NewRef(snapshot));
    Py_RETURN_NONE;
}

static PyObject *
shortcut_get_doc(Shortcut *self, void *Py_UNUSED(closure))
{
    return PyObject_GetAttrString(self->general, "__doc__");
}

static PyMethodDef shortcut_methods[] = {
    {"publish", (PyCFunction)shortcut_publish, METH_O,
     "Make ``snapshot`` the one readers start from (the writer calls it as it publishes)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef shortcut_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(Shortcut, vectorcall), READONLY, NULL},
    {"snapshot", T_OBJECT, offsetof(Shortcut, snapshot), READONLY, "The published snapshot."},
    {"general", T_OBJECT, offsetof(Shortcut, general), READONLY, "The Python verdict."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef shortcut_getset[] = {
    {"__doc__", (getter)shortcut_get_doc, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ShortcutType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fqdnpolicy.engine._shortcut.Shortcut",
    .tp_basicsize = sizeof(Shortcut),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "PolicyEngine.verdict's common case in C; everything else goes to the Python "
              "method.",
    .tp_new = shortcut_new,
    .tp_traverse = (traverseproc)shortcut_traverse,
    .tp_clear = (inquiry)shortcut_clear,
    .tp_dealloc = (destructor)shortcut_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Shortcut, vectorcall),
    .tp_methods = shortcut_methods,
    .tp_members = shortcut_members,
    .tp_getset = shortcut_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fqdnpolicy.engine._shortcut",
    .m_doc = "The readers' shortcut of PolicyEngine.verdict, in C (optional).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__shortcut(void)
{
    str_egress_attr = PyUnicode_InternFromString("egress");
    str_prefixes = PyUnicode_InternFromString("prefixes");
    str_outside = PyUnicode_InternFromString("outside");
    str_refs = PyUnicode_InternFromString("refs");
    str_family = PyUnicode_InternFromString("family");
    str_ports = PyUnicode_InternFromString("ports");
    str_bits = PyUnicode_InternFromString("bits");
    str_bit1 = PyUnicode_InternFromString("bit1");
    str_bit2 = PyUnicode_InternFromString("bit2");
    str_mask = PyUnicode_InternFromString("mask");
    str_peer_named = PyUnicode_InternFromString("peer_named");
    str_peer_ports = PyUnicode_InternFromString("peer_ports");
    str_action = PyUnicode_InternFromString("action");
    str_ip4 = PyUnicode_InternFromString("ip4");
    str_ip6 = PyUnicode_InternFromString("ip6");
    str_ingress = PyUnicode_InternFromString("ingress");
    str_trees = PyUnicode_InternFromString("trees");
    str_world = PyUnicode_InternFromString("_world");
    str_get = PyUnicode_InternFromString("get");
    str_asked = PyUnicode_InternFromString("asked");
    str_blocks = PyUnicode_InternFromString("blocks");
    str_fallback = PyUnicode_InternFromString("fallback");
    str_v4 = PyUnicode_InternFromString("v4");
    str_v6 = PyUnicode_InternFromString("v6");
    int_four = PyLong_FromLong(4);
    int_six = PyLong_FromLong(6);
    str_egress_value = str_egress_attr;
    if (str_egress_attr == NULL || str_prefixes == NULL || str_outside == NULL
        || str_refs == NULL || str_family == NULL || str_ports == NULL || str_bits == NULL
        || str_bit1 == NULL || str_bit2 == NULL
        || str_mask == NULL || str_peer_named == NULL || str_peer_ports == NULL
        || str_action == NULL || str_ip4 == NULL
        || str_ip6 == NULL || str_ingress == NULL || str_trees == NULL || str_world == NULL
        || str_get == NULL || str_asked == NULL || str_blocks == NULL || str_fallback == NULL || str_v4 == NULL || str_v6 == NULL || int_four == NULL
        || int_six == NULL) {
        return NULL;
    }
    if (PyType_Ready(&ShortcutType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Shortcut", (PyObject *)&ShortcutType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
