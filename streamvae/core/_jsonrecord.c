/* The common record's JSON read in one C call, or "not sure": the caller's Python path
 * (streamvae/service/intake.py: orjson, check_unique, RecordDecoder) decides the rest.
 *
 * Why C: that Python path costs ~12 us a record here (orjson ~3, the duplicate-name
 * check ~3, the reading ~6), on the daemon's main thread, where the model's worker
 * waits for it. This reads the one shape nearly every feed sends, in ~1 us:
 *
 *     {"entity": "pump-7", "ts": 1700000000.5, "values": {"temp": 21.5, "rpm": null}}
 *
 * Parser(names, max_entity_len).parse(value, key) -> (entity, ts, row) or None.
 * ``row``: a bytearray of len(names) float32 (NaN where no value came). None means only
 * "not this shape, or not sure": the Python path reads the record again and gives the
 * same answer it always gave, a reading or the reason for refusing it. So this accepts a
 * record only where the Python path accepts it with the same result, and bails out on
 * anything else: any member other than entity, ts and values (each exactly once); a
 * backslash, a control character or a byte over 0x7f in any string; an entity that is
 * empty, longer than max_entity_len, not printable ASCII (0x20-0x7e) or not equal to
 * the message key; a ts that is not a JSON number; a value that is not a number or
 * null; a name that is not one of ``names``, or given twice; no name of ``names`` at
 * all; a number that is not finite, is beyond a float32's range, is under a double's
 * normal range (subnormal, or rounded to zero), or is an integer of more than 15
 * digits; anything after the object but whitespace.
 *
 * Numbers are JSON's grammar exactly, converted exactly or by PyOS_string_to_double
 * (correctly rounded, as orjson's and float() are; the unit tests compare the two paths
 * on random and hand-made records). An integer is converted as Python's float(int) does
 * (-0 is 0.0). The caller applies what needs its state: the ts_in_future horizon and
 * the entity allow-list.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_NUMBER 64 /* characters of one number, at most (longer: not sure) */

typedef struct {
    PyObject_HEAD
    Py_ssize_t n;          /* feature names */
    char **names;          /* each name's UTF-8 bytes */
    Py_ssize_t *lens;
    PyObject *index;       /* dict: name as bytes -> its position, for names out of order */
    Py_ssize_t max_entity_len;
    unsigned char *seen;   /* per name, set while one record is read */
} Parser;

typedef struct {
    const unsigned char *p;
    Py_ssize_t pos, end;
} Scan;

static inline void skip_ws(Scan *s) {
    while (s->pos < s->end) {
        unsigned char c = s->p[s->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            return;
        s->pos++;
    }
}

/* A string with no escape, no control character and no byte over 0x7f: its bytes
 * between the quotes. 0: not one. */
static int read_string(Scan *s, const unsigned char **start, Py_ssize_t *len) {
    if (s->pos >= s->end || s->p[s->pos] != '"')
        return 0;
    Py_ssize_t i = ++s->pos;
    while (i < s->end) {
        unsigned char c = s->p[i];
        if (c == '"') {
            *start = s->p + s->pos;
            *len = i - s->pos;
            s->pos = i + 1;
            return 1;
        }
        if (c == '\\' || c < 0x20 || c > 0x7f)
            return 0;
        i++;
    }
    return 0;
}

static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* A JSON number, as a double. 0: not one, or one this does not vouch for (see the top).
 *
 * Most readings have at most 15 significant digits and a small exponent: their digits
 * m and 10^|e| are both exact doubles, so m * 10^e (or m / 10^-e) is one IEEE operation,
 * correctly rounded (Clinger's fast path). Any other number goes to PyOS_string_to_double. */
static int read_number(Scan *s, double *out) {
    const unsigned char *p = s->p;
    Py_ssize_t i = s->pos, end = s->end, digits = 0;
    int is_int = 1, nonzero = 0, negative = 0, sig = 0, frac_digits = 0, exp_digits = 0;
    uint64_t m = 0;
    long exp = 0;
    if (i < end && p[i] == '-') {
        negative = 1;
        i++;
    }
    if (i >= end)
        return 0;
    if (p[i] == '0') {
        i++;
        digits++;
    } else if (p[i] >= '1' && p[i] <= '9') {
        while (i < end && p[i] >= '0' && p[i] <= '9') {
            if (sig < 19) /* beyond: m is not used (sig > 15) */
                m = m * 10 + (uint64_t)(p[i] - '0');
            sig++;
            nonzero = 1;
            i++;
            digits++;
        }
    } else {
        return 0;
    }
    if (i < end && p[i] == '.') {
        is_int = 0;
        i++;
        Py_ssize_t frac = i;
        while (i < end && p[i] >= '0' && p[i] <= '9') {
            if (sig || p[i] != '0') { /* leading zeros are not significant */
                if (sig < 19)
                    m = m * 10 + (uint64_t)(p[i] - '0');
                sig++;
                nonzero = 1;
            }
            frac_digits++;
            i++;
        }
        if (i == frac)
            return 0;
    }
    if (i < end && (p[i] == 'e' || p[i] == 'E')) {
        is_int = 0;
        i++;
        int exp_negative = 0;
        if (i < end && (p[i] == '+' || p[i] == '-'))
            exp_negative = p[i++] == '-';
        Py_ssize_t first = i;
        while (i < end && p[i] >= '0' && p[i] <= '9') {
            if (++exp_digits <= 4)
                exp = exp * 10 + (p[i] - '0');
            i++;
        }
        if (i == first)
            return 0;
        if (exp_negative)
            exp = -exp;
    }
    Py_ssize_t len = i - s->pos;
    if (len >= MAX_NUMBER || (is_int && digits > 15))
        return 0;
    double d;
    long e10 = exp - frac_digits;
    if (sig <= 15 && exp_digits <= 4 && e10 >= -22 && e10 <= 22) {
        d = (double)m; /* exact: m < 10^15 < 2^53 */
        d = e10 >= 0 ? d * POW10[e10] : d / POW10[-e10];
        if (negative && !is_int)
            d = -d; /* an int has no sign at zero (float(-0) is 0.0); elsewhere it is d's */
        else if (negative)
            d = d == 0.0 ? 0.0 : -d;
    } else {
        char buf[MAX_NUMBER];
        memcpy(buf, p + s->pos, (size_t)len);
        buf[len] = '\0';
        char *stop = NULL;
        d = PyOS_string_to_double(buf, &stop, NULL);
        if (d == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        if (stop != buf + len)
            return 0;
        if (is_int && d == 0.0)
            d = 0.0; /* float(-0) is 0.0: the int has no sign */
    }
    if (!isfinite(d) || (d == 0.0 && nonzero) || (d != 0.0 && fabs(d) < DBL_MIN))
        return 0; /* not finite, or under a double's normal range */
    *out = d;
    s->pos = i;
    return 1;
}

/* The position of a feature name; -1: not one. ``guess``: where the last name's
 * successor would be (records list their features in one order, mostly the model's). */
static Py_ssize_t find_name(Parser *self, const unsigned char *name, Py_ssize_t len, Py_ssize_t guess) {
    if (guess < self->n && self->lens[guess] == len && memcmp(self->names[guess], name, (size_t)len) == 0)
        return guess;
    PyObject *key = PyBytes_FromStringAndSize((const char *)name, len);
    if (key == NULL) {
        PyErr_Clear();
        return -1;
    }
    PyObject *at = PyDict_GetItemWithError(self->index, key);
    Py_DECREF(key);
    if (at == NULL) {
        PyErr_Clear();
        return -1;
    }
    return PyLong_AsSsize_t(at);
}

/* The values object into row; 0: not sure. */
static int read_values(Parser *self, Scan *s, float *row) {
    if (s->pos >= s->end || s->p[s->pos] != '{')
        return 0;
    s->pos++;
    memset(self->seen, 0, (size_t)self->n);
    Py_ssize_t known = 0, guess = 0;
    skip_ws(s);
    if (s->pos < s->end && s->p[s->pos] == '}')
        return 0; /* no feature: the Python path says so */
    for (;;) {
        const unsigned char *name;
        Py_ssize_t len;
        skip_ws(s);
        if (!read_string(s, &name, &len))
            return 0;
        Py_ssize_t at = find_name(self, name, len, guess);
        if (at < 0 || self->seen[at])
            return 0;
        self->seen[at] = 1;
        known++;
        guess = at + 1;
        skip_ws(s);
        if (s->pos >= s->end || s->p[s->pos] != ':')
            return 0;
        s->pos++;
        skip_ws(s);
        if (s->end - s->pos >= 4 && memcmp(s->p + s->pos, "null", 4) == 0) {
            s->pos += 4; /* missing: the row keeps its NaN */
        } else {
            double d;
            if (!read_number(s, &d) || d > FLT_MAX || d < -FLT_MAX)
                return 0;
            row[at] = (float)d;
        }
        skip_ws(s);
        if (s->pos >= s->end)
            return 0;
        unsigned char c = s->p[s->pos++];
        if (c == '}')
            return known > 0;
        if (c != ',')
            return 0;
    }
}

static PyObject *Parser_parse(Parser *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "parse(value, key) takes two arguments");
        return NULL;
    }
    PyObject *value = args[0], *key = args[1];
    if (self->index == NULL || !PyBytes_Check(value) || (key != Py_None && !PyBytes_Check(key)))
        Py_RETURN_NONE; /* never initialised, or not bytes: the Python path says what it makes of it */
    Scan s = {(const unsigned char *)PyBytes_AS_STRING(value), 0, PyBytes_GET_SIZE(value)};
    PyObject *row = PyByteArray_FromStringAndSize(NULL, self->n * (Py_ssize_t)sizeof(float));
    if (row == NULL)
        return NULL;
    float *vals = (float *)PyByteArray_AS_STRING(row);
    for (Py_ssize_t i = 0; i < self->n; i++)
        vals[i] = NAN;
    const unsigned char *entity = NULL;
    Py_ssize_t entity_len = 0;
    double ts = 0.0;
    int have_ts = 0, have_values = 0;
    skip_ws(&s);
    if (s.pos >= s.end || s.p[s.pos] != '{')
        goto not_sure;
    s.pos++;
    for (;;) {
        const unsigned char *name;
        Py_ssize_t len;
        skip_ws(&s);
        if (!read_string(&s, &name, &len))
            goto not_sure;
        skip_ws(&s);
        if (s.pos >= s.end || s.p[s.pos] != ':')
            goto not_sure;
        s.pos++;
        skip_ws(&s);
        if (len == 6 && memcmp(name, "entity", 6) == 0 && entity == NULL) {
            if (!read_string(&s, &entity, &entity_len) || entity_len == 0 || entity_len > self->max_entity_len)
                goto not_sure;
            for (Py_ssize_t i = 0; i < entity_len; i++)
                if (entity[i] == 0x7f)
                    goto not_sure; /* DEL: not printable */
        } else if (len == 2 && memcmp(name, "ts", 2) == 0 && !have_ts) {
            if (!read_number(&s, &ts))
                goto not_sure;
            have_ts = 1;
        } else if (len == 6 && memcmp(name, "values", 6) == 0 && !have_values) {
            if (!read_values(self, &s, vals))
                goto not_sure;
            have_values = 1;
        } else {
            goto not_sure; /* another member, or one given twice */
        }
        skip_ws(&s);
        if (s.pos >= s.end)
            goto not_sure;
        unsigned char c = s.p[s.pos++];
        if (c == '}')
            break;
        if (c != ',')
            goto not_sure;
    }
    skip_ws(&s);
    if (s.pos != s.end || entity == NULL || !have_ts || !have_values)
        goto not_sure;
    if (key != Py_None &&
        (PyBytes_GET_SIZE(key) != entity_len || memcmp(PyBytes_AS_STRING(key), entity, (size_t)entity_len) != 0))
        goto not_sure;
    PyObject *text = PyUnicode_DecodeASCII((const char *)entity, entity_len, NULL);
    if (text == NULL) {
        Py_DECREF(row);
        return NULL;
    }
    PyObject *when = PyFloat_FromDouble(ts);
    if (when == NULL) {
        Py_DECREF(text);
        Py_DECREF(row);
        return NULL;
    }
    PyObject *out = PyTuple_New(3);
    if (out == NULL) {
        Py_DECREF(text);
        Py_DECREF(when);
        Py_DECREF(row);
        return NULL;
    }
    PyTuple_SET_ITEM(out, 0, text);
    PyTuple_SET_ITEM(out, 1, when);
    PyTuple_SET_ITEM(out, 2, row);
    return out;
not_sure:
    Py_DECREF(row);
    Py_RETURN_NONE;
}

static void Parser_dealloc(Parser *self) {
    if (self->names != NULL)
        for (Py_ssize_t i = 0; i < self->n; i++)
            PyMem_Free(self->names[i]);
    PyMem_Free(self->names);
    PyMem_Free(self->lens);
    PyMem_Free(self->seen);
    Py_XDECREF(self->index);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Parser_init(Parser *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"names", "max_entity_len", NULL};
    PyObject *names;
    Py_ssize_t max_entity_len;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "On", kwlist, &names, &max_entity_len))
        return -1;
    PyObject *seq = PySequence_Fast(names, "names must be a sequence of str");
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (self->names != NULL || n == 0) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, n == 0 ? "no feature names" : "Parser is initialised once");
        return -1;
    }
    self->names = PyMem_Calloc((size_t)n, sizeof(char *));
    self->lens = PyMem_Calloc((size_t)n, sizeof(Py_ssize_t));
    self->seen = PyMem_Calloc((size_t)n, 1);
    self->index = PyDict_New();
    self->n = n;
    self->max_entity_len = max_entity_len;
    if (self->names == NULL || self->lens == NULL || self->seen == NULL || self->index == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t len;
        const char *utf8 = PyUnicode_AsUTF8AndSize(PySequence_Fast_GET_ITEM(seq, i), &len);
        if (utf8 == NULL)
            goto fail;
        self->names[i] = PyMem_Malloc((size_t)len + 1);
        if (self->names[i] == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        memcpy(self->names[i], utf8, (size_t)len + 1);
        self->lens[i] = len;
        PyObject *k = PyBytes_FromStringAndSize(utf8, len), *v = PyLong_FromSsize_t(i);
        int bad = k == NULL || v == NULL || PyDict_SetItem(self->index, k, v) < 0;
        Py_XDECREF(k);
        Py_XDECREF(v);
        if (bad)
            goto fail;
    }
    Py_DECREF(seq);
    return 0;
fail:
    Py_DECREF(seq);
    return -1;
}

static PyMethodDef Parser_methods[] = {
    {"parse", (PyCFunction)(void (*)(void))Parser_parse, METH_FASTCALL,
     "parse(value, key) -> (entity, ts, row) or None: see streamvae/core/_jsonrecord.c"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ParserType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "streamvae.core._jsonrecord.Parser",
    .tp_basicsize = sizeof(Parser),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Parser(names, max_entity_len): the common record's JSON, read in one call",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Parser_init,
    .tp_dealloc = (destructor)Parser_dealloc,
    .tp_methods = Parser_methods,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jsonrecord", NULL, -1, NULL, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__jsonrecord(void) {
    if (PyType_Ready(&ParserType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ParserType);
    if (PyModule_AddObject(m, "Parser", (PyObject *)&ParserType) < 0) {
        Py_DECREF(&ParserType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
