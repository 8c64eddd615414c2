;;; sched-mode.el --- Major mode for schedc .sched schedule files -*- lexical-binding: t; -*-

;; Version: 0.1.0
;; Package-Requires: ((emacs "27.1"))
;; Keywords: languages
;; URL: https://github.com/schedc/schedc
;; SPDX-License-Identifier: MIT

;;; Commentary:

;; Highlighting, `#' comments and indentation for schedc `.sched' files.
;; Parameter patterns after free/fix/init are highlighted as names even when
;; they look like keywords (`free model.lr').
;;
;; M-x compile runs `schedc check --format concise FILE'; its
;; `file:line:col: error[CODE]: message' lines are understood by
;; compilation-mode (errors and warnings).  With eglot, `M-x eglot' starts the
;; schedc language server (`schedc lsp'): diagnostics, hover, completion,
;; go-to-definition and formatting.
;;
;; Installation: put this file on `load-path' and (require 'sched-mode).

;;; Code:

(require 'rx)

(defvar compilation-error-regexp-alist)
(defvar compilation-error-regexp-alist-alist)
(defvar eglot-server-programs)

(defgroup sched nil
  "Major mode for schedc schedule files."
  :group 'languages
  :prefix "sched-")

(defcustom sched-indent-offset 2
  "Indentation of a phase body, a repeat block or a params block."
  :type 'integer)

(defcustom sched-schedc-program "schedc"
  "The schedc executable (for `compile' and the language server)."
  :type 'string)

(defconst sched-keywords
  '("model" "loss" "data" "seed" "optimizer" "accumulate" "ema" "default" "let" "phase" "repeat" "params"
    "lr" "free" "fix" "fixed" "init" "reset" "carry" "state" "stop" "when" "over"
    "after" "until" "in" "at" "for" "then" "validation" "eval" "every" "batch" "epoch" "epochs"
    "steps" "evals" "stops" "keep")
  "Keywords of the language (schedc.lang.syntax.KEYWORDS, less true/false).")

(defconst sched-builtins
  '("constant" "linear" "polynomial" "cosine" "exponential" "warmup_constant" "warmup_cosine"
    "warmup_exponential" "onecycle" "linear_onecycle" "piecewise" "interpolate" "sgdr" "smooth"
    "hump" "exp" "values" "step" "every" "stepwise" "min" "max" "clip" "normal" "uniform" "value")
  "Schedules and distributions (schedc.check.catalog).")

(defconst sched--name (rx (any alpha "_") (* (any alnum "_"))))

;; One parameter pattern: names, `*'/`**', `{a,b}', `[0]', `[*]', `["key"]'.
(defconst sched--pattern
  (rx (+ (or (any alnum "_*.") (seq "{" (* (any alnum "_*,")) "}")
             (seq "[" (or (+ digit) "*" (seq "\"" (* (or (not (any "\"\\\n")) (seq "\\" nonl))) "\"")) "]")))))

(defvar sched-mode-syntax-table
  (let ((table (make-syntax-table)))
    (modify-syntax-entry ?# "<" table)
    (modify-syntax-entry ?\n ">" table)
    (modify-syntax-entry ?\" "\"" table)
    (modify-syntax-entry ?\\ "\\" table)
    (modify-syntax-entry ?_ "_" table)
    (modify-syntax-entry ?< "(>" table)
    (modify-syntax-entry ?> ")<" table)
    (dolist (char '(?+ ?- ?* ?/ ?= ?~ ?| ?% ?: ?\; ?, ?$))
      (modify-syntax-entry char "." table))
    table)
  "Syntax table of `sched-mode': `< >' are brackets, `#' starts a comment.")

(defconst sched--syntax-propertize
  (syntax-propertize-rules
   ;; the `>' of `->' and the `<' of `stop when METRIC <' are operators, not brackets
   ("-\\(>\\)" (1 "."))
   ((rx symbol-start "when" (+ space) (+ (any alnum "_")) (* space) (group "<")) (1 ".")))
  "Mark `->' and the comparison in stop rules as punctuation.")

(defun sched--match-patterns (limit)
  "Find the next pattern list after free/fix/init before LIMIT.
Group 1 is the list.  `free in 0' (a params spec) and `init normal(...)'
\(a call) are not patterns."
  (let (found)
    (while (and (not found)
                (re-search-forward (rx symbol-start (or "free" "fix" "init") symbol-end (+ space)) limit t))
      (let ((start (point)))
        (unless (or (nth 8 (syntax-ppss start))
                    (looking-at (rx (or "in" "after" "until") (+ space) (any alnum "_$")))
                    (looking-at (rx (+ (any alnum "_")) (* space) "(")))
          (when (looking-at sched--pattern)
            (goto-char (match-end 0))
            (while (looking-at (concat "[ \t\n]*,[ \t\n]*\\(" sched--pattern "\\)"))
              (goto-char (match-end 0)))
            (set-match-data (list start (point) start (point)))
            (setq found t)))))
    found))

(defun sched--match-phase-name (limit)
  "Find the next `phase NAME STEPS' before LIMIT; group 1 is NAME.
In `phase 100 lr ...' and `phase steps lr ...' the word after `phase'
is the step count, not a name."
  (let (found)
    (while (and (not found)
                (re-search-forward (concat "\\_<phase[ \t\n]+\\(" sched--name "\\)[ \t\n]+") limit t))
      (let ((data (match-data)))
        (unless (or (nth 8 (syntax-ppss (match-beginning 0)))
                    (looking-at (rx (or "lr" "optimizer" "accumulate" "ema") symbol-end))
                    (not (looking-at "[0-9.$[:alpha:]_]")))
          (set-match-data data)
          (setq found t))))
    found))

(defvar sched-font-lock-keywords
  `((,(rx symbol-start (or "true" "false") symbol-end) . font-lock-constant-face)
    (sched--match-patterns (1 font-lock-variable-name-face t))
    (,(concat "\\_<let[ \t]+\\(" sched--name "\\)") (1 font-lock-variable-name-face))
    (sched--match-phase-name (1 font-lock-function-name-face))
    (,(concat "\\_<optimizer[ \t]+\\(" sched--name "\\(?:\\." sched--name "\\)*\\)") (1 font-lock-type-face))
    (,(concat "\\_<when[ \t]+\\(" sched--name "\\)") (1 font-lock-constant-face))
    ;; `plateau(on=val.loss)': the metric a plateau follows
    (,(concat "\\_<on[ \t]*=[ \t]*\\(" sched--name "\\(?:\\." sched--name "\\)?\\)") (1 font-lock-constant-face))
    (,(concat "\\(" sched--name "\\)[ \t]*=[^=]") (1 font-lock-variable-name-face))
    ;; `every step': an evaluation's unit with its count left out (`step' alone is the schedule `step(...)')
    ("\\_<every[ \t]+\\(steps?\\|epochs?\\)\\_>" (1 font-lock-keyword-face))
    (,(concat "\\_<" (regexp-opt sched-builtins t) "[ \t]*(") (1 font-lock-builtin-face))
    (,(concat "\\_<" (regexp-opt sched-keywords t) "\\_>") (1 font-lock-keyword-face))
    (,(concat "\\(" sched--name "\\)[ \t]*(") (1 font-lock-function-name-face))
    ("\\$[[:alpha:]_][[:alnum:]_]*" . font-lock-preprocessor-face)
    ("\\_<[0-9][0-9_]*\\(?:\\.[0-9_]*\\)?\\(?:[eE][-+]?[0-9]+\\)?%?" . font-lock-constant-face))
  "Highlighting of `sched-mode'.")

(defun sched-indent-line ()
  "Indent the current line by its depth in `< >', `( )', `[ ]' and `{ }'."
  (interactive)
  (let* ((depth (save-excursion
                  (beginning-of-line)
                  (car (syntax-ppss))))
         (closing (save-excursion
                    (back-to-indentation)
                    (looking-at "[]>)}]")))
         (column (* sched-indent-offset (max 0 (- depth (if closing 1 0)))))
         (offset (- (current-column) (current-indentation))))
    (indent-line-to column)
    (when (> offset 0)
      (move-to-column (+ column offset)))))

;;;###autoload
(define-derived-mode sched-mode prog-mode "Sched"
  "Major mode for schedc `.sched' schedule files."
  :syntax-table sched-mode-syntax-table
  (setq-local comment-start "# ")
  (setq-local comment-start-skip "#+[ \t]*")
  (setq-local comment-end "")
  (setq-local font-lock-defaults '(sched-font-lock-keywords))
  (setq-local syntax-propertize-function sched--syntax-propertize)
  (setq-local indent-line-function #'sched-indent-line)
  (setq-local compile-command
              (concat sched-schedc-program " check --format concise "
                      (if buffer-file-name (shell-quote-argument (file-name-nondirectory buffer-file-name)) ""))))

;;;###autoload
(add-to-list 'auto-mode-alist '("\\.sched\\'" . sched-mode))

;; `file:line:col: error[E0104]: ...' and `...: warning[W0101]: ...' from `schedc check --format concise'.
(with-eval-after-load 'compile
  (add-to-list 'compilation-error-regexp-alist-alist
               '(schedc "^\\([^:\n]+\\):\\([0-9]+\\):\\([0-9]+\\): \\(?:error\\|\\(warning\\)\\)\\[[A-Z][0-9]+\\]: "
                        1 2 3 (4)))
  (add-to-list 'compilation-error-regexp-alist 'schedc))

;; M-x eglot in a .sched buffer starts `schedc lsp'.
(with-eval-after-load 'eglot
  (add-to-list 'eglot-server-programs `(sched-mode . (,sched-schedc-program "lsp"))))

(provide 'sched-mode)
;;; sched-mode.el ends here
