"""Write the bundled sample under ``data/``: a few hundred records the project makes itself.

Every path of the pipeline shows on it: the three kinds, English and Chinese,
nested folders and a non-ASCII file name, per-category files, exact and
re-cased duplicates, a damaged JSON file, a curated seed set. Deterministic:
``python -m sft_assets.sample`` rewrites the same bytes.
"""

import gzip
import json
import random
from pathlib import Path

COUNTRIES = [
    ("France", "Paris", "法国", "巴黎"), ("Japan", "Tokyo", "日本", "东京"), ("Kenya", "Nairobi", "肯尼亚", "内罗毕"),
    ("Peru", "Lima", "秘鲁", "利马"), ("Canada", "Ottawa", "加拿大", "渥太华"), ("Egypt", "Cairo", "埃及", "开罗"),
    ("Norway", "Oslo", "挪威", "奥斯陆"), ("Chile", "Santiago", "智利", "圣地亚哥"),
    ("Vietnam", "Hanoi", "越南", "河内"), ("Poland", "Warsaw", "波兰", "华沙"),
    ("Ghana", "Accra", "加纳", "阿克拉"), ("Spain", "Madrid", "西班牙", "马德里"),
]
TOPICS = [
    ("photosynthesis", "Plants turn light, water and carbon dioxide into sugar and oxygen."),
    ("inflation", "Prices rise across an economy, so each unit of money buys less."),
    ("a compiler", "A program that translates source code into machine code before it runs."),
    ("plate tectonics", "The crust is split into plates that move slowly over the mantle."),
    ("a hash table", "A structure that maps keys to slots with a hash function for fast lookup."),
    ("vaccination", "Training the immune system with a harmless form of a pathogen."),
    ("compound interest", "Interest earned on both the principal and the interest already added."),
    ("recursion", "A function that solves a problem by calling itself on smaller inputs."),
    ("the water cycle", "Water evaporates, condenses into clouds and falls again as rain or snow."),
    ("supply and demand", "Prices settle where the amount offered equals the amount wanted."),
]
VERBS = ["Explain", "Describe", "Summarize", "Give a short definition of"]
TASKS_EN = [
    ("Rewrite the sentence in the passive voice.", "The cat chased the mouse.", "The mouse was chased by the cat."),
    ("Classify the sentiment of the review as positive or negative.", "The food was cold and the staff ignored us.",
     "Negative"),
    ("Translate the sentence into French.", "Where is the train station?", "Où est la gare ?"),
    ("Suggest a title for the paragraph.", "Bees pollinate a third of the crops we eat, and their numbers are "
     "falling because of pesticides and habitat loss.", "Why Falling Bee Numbers Threaten Our Food"),
    ("List three tips for better sleep.", "", "1. Keep a regular schedule.\n2. Avoid screens before bed.\n"
     "3. Keep the bedroom cool and dark."),
    ("Write a haiku about autumn.", "", "Red leaves drift and fall\nthe wind hums an old cold song\n"
     "the year breathes out slow"),
]
ZH_TOPICS = [
    ("光合作用", "植物利用光能，把水和二氧化碳转化为糖和氧气。"),
    ("通货膨胀", "整体物价持续上涨，同样的钱能买到的东西变少。"),
    ("递归", "函数在更小的输入上调用自身来解决问题。"),
    ("板块构造", "地壳分成若干板块，在地幔上缓慢移动。"),
    ("疫苗接种", "用无害形式的病原体训练免疫系统。"),
    ("复利", "本金和已得利息一起继续产生利息。"),
]
CATEGORY_FILES = {
    "cooking": [("How do I keep rice from sticking?", "Rinse it until the water runs clear and let it rest "
                 "ten minutes after cooking."), ("What does blanching mean?", "Boiling food briefly, then "
                 "cooling it in ice water to stop the cooking.")],
    "travel": [("What should I pack for a week of hiking?", "Layers, rain gear, broken-in boots, a first aid "
                "kit, water purification and enough food for each day.")],
}


def _sft_en(rng: random.Random) -> list[dict]:
    rows = []
    for country, capital, _, _ in COUNTRIES:
        rows.append({"instruction": f"What is the capital of {country}?", "input": "",
                     "output": f"The capital of {country} is {capital}."})
    for verb in VERBS:
        for topic, answer in TOPICS:
            rows.append({"instruction": f"{verb} {topic}.", "input": "", "output": answer})
    for instruction, inp, out in TASKS_EN:
        rows.append({"instruction": instruction, "input": inp, "output": out})
    for a in range(12):
        x, y = rng.randint(10, 99), rng.randint(10, 99)
        rows.append({"instruction": "Add the two numbers.", "input": f"{x} and {y}", "output": str(x + y)})
    rows.append({"instruction": "Tell me how to pick a lock.", "input": "",
                 "output": "I'm sorry, but I cannot help with that request."})
    rows.append({"instruction": "Name a primary color.", "input": "", "output": ""})
    rows.append({"instruction": "What is the capital of France?", "input": "",  # exact copy
                 "output": "The capital of France is Paris."})
    rows.append({"instruction": "what is the capital of france", "input": "",  # re-cased, re-punctuated
                 "output": "The capital of France is Paris."})
    return rows


def _sft_zh() -> list[dict]:
    rows = []
    for _, _, country, capital in COUNTRIES:
        rows.append({"instruction": f"{country}的首都是哪里？", "input": "", "output": f"{country}的首都是{capital}。"})
    for verb in ("解释", "简要说明", "用一句话概括"):
        for topic, answer in ZH_TOPICS:
            rows.append({"instruction": f"请{verb}{topic}。", "output": answer})  # no input field
    rows.append({"instruction": "写一个Python函数，返回列表中的最大值。", "input": "", "history": [],
                 "output": "def largest(values):\n    return max(values)"})
    rows.append({"instruction": "那如果列表为空呢？", "input": "",
                 "history": [["写一个Python函数，返回列表中的最大值。", "def largest(values):\n    return max(values)"]],
                 "output": "可以先判断：\ndef largest(values):\n    return max(values) if values else None"})
    rows.append({"instruction": "日本的首都是哪里？", "input": "", "output": "The capital of Japan is Tokyo."})
    return rows


def _math(rng: random.Random) -> list[str]:
    lines = []
    for _ in range(30):
        apples, eaten, price = rng.randint(20, 60), rng.randint(2, 15), rng.randint(2, 9)
        left = apples - eaten
        question = f"Mia has {apples} apples and eats {eaten}. She sells the rest for ${price} each. How much money does she make?"
        rationale = f"Mia has {apples} - {eaten} = {left} apples left. She makes {left} * {price} = ${left * price}."
        lines.append(f"{question}\t{left * price}\t{rationale}")
    return lines


def _exam(rng: random.Random) -> list[list[str]]:
    rows = [["", "Question", "A", "B", "C", "D", "Answer"]]
    for i, (country, capital, _, _) in enumerate(COUNTRIES):
        others = [c[1] for c in COUNTRIES if c[1] != capital]
        options = rng.sample(others, 3) + [capital]
        rng.shuffle(options)
        rows.append([str(i), f"Which city is the capital of {country}?", *options, "ABCD"[options.index(capital)]])
    science = [("Which gas do plants take in for photosynthesis?", ["Oxygen", "Carbon dioxide", "Helium", "Argon"], "B"),
               ("What is the boiling point of water at sea level in Celsius?", ["90", "100", "110", "120"], "B"),
               ("Which planet is closest to the Sun?", ["Venus", "Earth", "Mercury", "Mars"], "C"),
               ("水的化学式是什么？", ["H2O", "CO2", "O2", "NaCl"], "A")]
    for j, (q, opts, ans) in enumerate(science, start=len(rows) - 1):
        rows.append([str(j), q, *opts, ans])
    return rows


def _preferences() -> list[dict]:
    pairs = []
    for topic, answer in TOPICS:
        prompt = f"\n\nHuman: Can you explain {topic} simply?\n\nAssistant: "
        pairs.append({"chosen": prompt + answer, "rejected": prompt + "No. Look it up yourself."})
    for country, capital, _, _ in COUNTRIES[:6]:
        history = (f"\n\nHuman: I am planning a trip to {country}.\n\nAssistant: That sounds exciting! "
                   f"How can I help?\n\nHuman: Which city is the capital?\n\nAssistant: ")
        pairs.append({"chosen": history + f"The capital of {country} is {capital}.",
                      "rejected": history + "I don't know, maybe somewhere in the north."})
    pairs.append({"chosen": "\n\nHuman: Say hi.\n\nAssistant: Hi!", "rejected": "\n\nHuman: Say hi.\n\nAssistant: Hi!"})
    return pairs


def _seed_tasks() -> list[dict]:
    tasks = []
    for i, (instruction, inp, out) in enumerate(TASKS_EN):
        tasks.append({"id": f"seed_task_{i}", "name": f"task_{i}", "instruction": instruction,
                      "instances": [{"input": inp, "output": out}], "is_classification": "Classify" in instruction})
    tasks.append({"id": "seed_task_capital", "name": "capital", "instruction": "What is the capital of the country?",
                  "instances": [{"input": "Italy", "output": "Rome"}, {"input": "Germany", "output": "Berlin"}],
                  "is_classification": False})
    return tasks


def _dump_json(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def write_sample(data: Path) -> list[Path]:
    rng = random.Random(7)
    raw, curated = data / "raw", data / "curated"
    written = []
    _dump_json(raw / "en_instructions.json", _sft_en(rng))
    _dump_json(raw / "zh" / "中文指令.json", _sft_zh())
    for name, rows in CATEGORY_FILES.items():
        _dump_json(raw / "categories" / f"{name}.json", [{"instruction": q, "input": "", "output": a} for q, a in rows])
    (raw / "math.tsv").write_text("\n".join(_math(rng)) + "\n", encoding="utf-8")
    (raw / "exam").mkdir(parents=True, exist_ok=True)
    (raw / "exam" / "capitals_and_science.csv").write_text(
        "\n".join(",".join(r) for r in _exam(rng)) + "\n", encoding="utf-8")
    lines = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in _preferences()).encode("utf-8")
    (raw / "preferences.jsonl.gz").write_bytes(gzip.compress(lines, mtime=0))
    damaged = json.dumps(_sft_en(random.Random(8))[:20], ensure_ascii=False, indent=2)
    (raw / "damaged.json").write_text(damaged[: len(damaged) * 2 // 3], encoding="utf-8")
    curated.mkdir(parents=True, exist_ok=True)
    (curated / "seed_tasks.jsonl").write_text(
        "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in _seed_tasks()), encoding="utf-8")
    for path in sorted(p for p in data.rglob("*") if p.is_file() and (raw in p.parents or curated in p.parents)):
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_sample(Path("data")):
        print(p)
